"""Programs from a TOML file: a new name is created, a known one updated only where the file changes it."""

from __future__ import annotations

from dataclasses import replace

from sidecar.programs import toml_import
from sidecar.programs.catalog import ProgramCatalog
from sidecar.programs.legacy import apply_import, plan_import


def test_a_program_the_file_does_not_change_is_left_alone(runtime):
    apply_import(runtime, plan_import(runtime), actor="admin")
    catalog = ProgramCatalog(runtime)
    [stored] = catalog.all()
    [planned] = toml_import.plan(catalog, [replace(stored.definition, legacy_post_id=None)])
    assert (planned.existing_id, planned.action, planned.changes) == (stored.id, "unchanged", ())
    assert toml_import.apply(catalog, [planned], actor="admin") == {"created": 0, "updated": 0, "unchanged": 1}


def test_an_update_names_the_fields_it_changes_and_keeps_the_link_to_the_legacy_post(runtime):
    apply_import(runtime, plan_import(runtime), actor="admin")
    catalog = ProgramCatalog(runtime)
    [stored] = catalog.all()
    assert stored.definition.legacy_post_id is not None
    # A file knows nothing of legacy posts: updating the imported program from it keeps the link.
    from_file = replace(stored.definition, legacy_post_id=None, notify_step_subject="Новый шаг: [next_course]")
    [planned] = toml_import.plan(catalog, [from_file])
    assert (planned.action, planned.changes) == ("update", ("notify_step_subject",))
    assert toml_import.apply(catalog, [planned], actor="admin") == {"created": 0, "updated": 1, "unchanged": 0}
    updated = catalog.get(stored.id).definition
    assert updated.notify_step_subject == "Новый шаг: [next_course]"
    assert updated.legacy_post_id == stored.definition.legacy_post_id
    # So importing the legacy data again finds it and does not create it twice.
    assert [p.already_imported_as for p in plan_import(runtime).programs] == [stored.id]


def test_steps_may_be_given_in_years(tmp_path):
    path = tmp_path / "programs.toml"
    path.write_text('[[program]]\nname = "Год"\nsteps = [{ term_id = 10, duration = 1, units = "years" }]\n',
                    encoding="utf-8")
    [definition] = toml_import.read_file(path)
    assert [(s.term_id, s.duration, s.units) for s in definition.steps] == [(10, 1, "years")]
    assert definition.steps[0].as_ordered() == (12, "months")
