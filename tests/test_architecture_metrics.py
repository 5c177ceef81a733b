"""scripts/architecture_metrics.py: the CI stage's walk and the settings-loader count."""

from __future__ import annotations

from test_complexity import METRICS


def test_walk_summary_counts_files_stops_and_returns() -> None:
    walk = METRICS.walk_summary(["a.py", "b.py", "a.py", "c.py", "a.py", "b.py"])
    assert walk == {"files": 3, "stops": 5, "returns": {"a.py": 2, "b.py": 1}}


def test_the_suggest_walk_starts_in_the_stage_and_writes_the_config() -> None:
    sequence = METRICS.suggest_walk()
    assert sequence[0] == "jpo/stage/suggest.py"
    assert {"jpo/stage/safe_write.py", "jpo/stage/audit.py"} <= set(sequence)


def test_settings_loaders_are_found_where_a_settings_file_is_parsed() -> None:
    loaders = METRICS.settings_loaders()
    assert "jpo.settings._parse_yaml" in loaders or "jpo.settings.read_config" in loaders
    assert all(name.startswith("jpo.") for name in loaders)
