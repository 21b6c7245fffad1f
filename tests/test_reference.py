"""docs/configuration.md is generated from the settings models and cannot drift from them."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from secmw.config.names import variable_name
from secmw.config.reference import settings_reference
from secmw.config.settings import SecuritySettings

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_configuration_reference_is_up_to_date() -> None:
    """The committed file equals what `python -m secmw.config.reference` writes."""
    assert DOC.read_text(encoding="utf-8") == settings_reference(), (
        "docs/configuration.md is stale:"
        " run `python -m secmw.config.reference > docs/configuration.md`"
    )


def test_every_variable_is_documented_with_a_meaning() -> None:
    """Each field of each section has a row naming its SECMW_* variable."""
    text = settings_reference()

    def check(model: type[BaseModel], loc: tuple[str, ...]) -> int:
        count = 0
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                count += check(annotation, (*loc, name))
                continue
            assert f"`{variable_name(*loc, name)}`" in text
            count += 1
        return count

    total = 0
    for section_name, field in SecuritySettings.model_fields.items():
        section = field.annotation
        assert isinstance(section, type)
        assert issubclass(section, BaseModel)
        total += check(section, (section_name,))
    assert total == text.count("| `SECMW_")
