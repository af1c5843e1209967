"""Messages as codes with parameters: the English the CLI prints, and the form kept in the store that a
later reader turns back into a message, or leaves as the text it was."""

from __future__ import annotations

import pytest

from sidecar.domain.messages import ENGLISH, Message, from_dict, from_stored


def test_a_message_reads_as_its_english_sentence():
    said = Message("programs.too_many_steps", {"max": 50})
    assert said.english() == str(said) == "at most 50 steps"
    assert Message("programs.unknown_level", {"id": 999}, field="steps.2.term_id").english() == (
        "steps.2.term_id: access level 999 does not exist")


def test_only_codes_of_the_registry_can_be_made():
    with pytest.raises(ValueError, match="unknown message code 'programs.nonsense'"):
        Message("programs.nonsense")
    assert all(code.count(".") >= 1 and text and text == text.strip() for code, text in ENGLISH.items())


def test_a_stored_message_comes_back_whole():
    said = Message("programs.step_waits", {"step": 2, "detail": "no product «Йога»"}, field="steps.2.duration")
    assert from_stored(said.stored()) == said
    assert "«Йога»" in said.stored()                      # readable in the column, not escaped
    assert from_dict(said.as_dict()) == said


@pytest.mark.parametrize("text", ["step 2 cannot be granted: no product", "", "{not json", "{}",
                                  '{"code": "programs.gone", "params": {}}',
                                  '{"code": "programs.too_many_steps", "params": {}}',
                                  '{"code": "programs.too_many_steps", "params": [1]}',
                                  '["programs.too_many_steps"]'])
def test_text_written_before_codes_or_by_another_version_is_kept_as_it_is(text):
    assert from_stored(text) == text


def test_a_message_inside_a_message_is_kept_and_read_back():
    reason = Message("templates.unknown_variable", {"name": "coupon", "known": "first_name"})
    said = Message("settings.template_at_line", {"line": 3, "reason": reason})
    assert said.english() == "template error at line 3: unknown variable 'coupon' (known: first_name)"
    assert from_stored(said.stored()) == said
    broken = said.as_dict()
    broken["params"]["reason"]["code"] = "templates.gone"
    assert from_dict(broken) is None                     # the outer message cannot be read without it


def test_a_list_of_messages_reads_as_one_text_and_comes_back_whole():
    fields = [Message("grants.duration_required", field="lead.duration"), Message("grants.units_invalid", field="lead.units")]
    said = Message("grants.lead_rejected_fields", {"lead": 7, "reason": Message("grants.invalid_fields"), "fields": fields})
    assert said.english() == ("amoCRM lead 7: the request has invalid fields; lead.duration: duration is required; "
                              "lead.units: units must be day(s), month(s) or year(s) (Russian words accepted too)")
    assert from_stored(said.stored()) == said
    assert from_dict({"code": "grants.duplicated", "params": {"count": 2, "keys": [31, 32]}}) == Message(
        "grants.duplicated", {"count": 2, "keys": [31, 32]})     # a plain list stays a list


def test_nothing_stored_reads_as_no_text():
    assert from_stored(None) == ""
    assert from_dict(None) is None
