"""config/README.md's schema reference is generated from the field descriptions and must be current."""

from pathlib import Path

import pydantic

import config
from config import _reference

README = Path(config.__file__).parent / "README.md"


def test_readme_reference_is_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert _reference.BEGIN in text and _reference.END in text
    assert _reference.replace_reference(text) == text, "run: python -m config._reference config/README.md"


def test_every_documented_field_has_a_description() -> None:
    missing = [
        f"{model.__name__}.{name}"
        for _, model in _reference._SECTIONS
        for name, field in model.model_fields.items()
        if name != "type" and not field.description
    ]
    assert missing == []


def test_every_model_reachable_from_the_root_has_a_section() -> None:
    documented = {model for _, model in _reference._SECTIONS}
    pending: list[type[pydantic.BaseModel]] = [config.XdplbConfig]
    reachable: set[type[pydantic.BaseModel]] = set()
    while pending:
        model = pending.pop()
        if model not in reachable:
            reachable.add(model)
            for field in model.model_fields.values():
                pending.extend(_models(field.annotation))
    assert reachable == documented


def _models(annotation: object) -> list[type[pydantic.BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    found = [m for arg in getattr(annotation, "__args__", ()) for m in _models(arg)]
    return found + (_models(getattr(annotation, "__origin__")) if hasattr(annotation, "__metadata__") else [])
