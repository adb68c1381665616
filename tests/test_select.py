"""--include/--exclude and --shard: pure selection rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icanhazmodel import UsageError
from icanhazmodel._select import Filters, Shard, parse_shard, relative_key

# The README's table of examples, checked here.
EXAMPLES = [
    # include, exclude, relative key, selected?
    ((), (), "models/ft/model.bin", True),
    (("*.yaml",), (), "models/ft/spec.yaml", True),  # base name, at any depth
    (("*.yaml",), (), "models/ft/model.bin", False),
    (("models/*",), (), "models/ft/model.bin", True),  # '*' crosses '/'
    (("models/*",), (), "data/train.jsonl", False),
    (("*.json", "*.yaml"), (), "tokenizer/vocab.json", True),  # any include
    ((), ("data/*",), "data/train.jsonl", False),
    ((), ("data/*",), "models/x.bin", True),
    (("*.bin",), ("*.bin",), "models/x.bin", False),  # exclude wins
    (("models/*",), ("*.npy",), "models/ft/w.npy", False),
    (("?odels/*",), (), "models/a", True),
    (("[md]*/*.bin",), (), "data/x.bin", True),
    (("*.YAML",), (), "spec.yaml", False),  # case-sensitive, like S3
]


@pytest.mark.parametrize(("include", "exclude", "key", "selected"), EXAMPLES)
def test_filter_examples(
    include: tuple[str, ...], exclude: tuple[str, ...], key: str, selected: bool
) -> None:
    assert Filters(include, exclude).selects(key) is selected


@given(
    st.lists(st.sampled_from(["*.bin", "a/*", "*", "x?"]), max_size=3),
    st.lists(st.sampled_from(["*.bin", "a/*", "*", "x?"]), max_size=3),
    st.text(st.sampled_from("ab/x.bin"), max_size=12),
)
def test_exclude_always_wins_whatever_the_order(
    include: list[str], exclude: list[str], key: str
) -> None:
    forward = Filters(tuple(include), tuple(exclude)).selects(key)
    backward = Filters(tuple(reversed(include)), tuple(reversed(exclude))).selects(key)
    assert forward == backward
    if exclude and Filters((), tuple(exclude)).selects(key) is False:
        assert forward is False


def test_empty_pattern_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        Filters(("",), ())


def test_relative_key() -> None:
    assert relative_key("conduct/v1.2/models/a.bin", "conduct/v1.2/") == "models/a.bin"
    assert relative_key("conduct/v1.2/models/a.bin", "") == "a.bin"


@given(st.lists(st.text(min_size=1, max_size=30), unique=True, max_size=200), st.integers(1, 9))
def test_shards_are_disjoint_and_cover_the_listing(keys: list[str], count: int) -> None:
    owners = {key: [i for i in range(count) if Shard(i, count).owns(key)] for key in keys}
    assert all(len(owner) == 1 for owner in owners.values())


def test_shards_spread_keys_evenly() -> None:
    keys = [f"data/shard-{i:05d}.tar" for i in range(10_000)]
    sizes = [sum(Shard(i, 4).owns(k) for k in keys) for i in range(4)]
    assert all(2300 < size < 2700 for size in sizes), sizes


def test_shard_is_stable_across_processes() -> None:
    # Fixed values: the partition must not depend on PYTHONHASHSEED.
    assert [Shard(i, 3).owns("models/a.bin") for i in range(3)].count(True) == 1
    owner = next(i for i in range(3) if Shard(i, 3).owns("models/a.bin"))
    assert owner == next(i for i in range(3) if parse_shard(f"{i}/3").owns("models/a.bin"))


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"RANK": "2", "WORLD_SIZE": "8"}, Shard(2, 8)),
        ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4"}, Shard(1, 4)),
        ({"PMI_RANK": "0", "PMI_SIZE": "2"}, Shard(0, 2)),
        (
            {
                "SLURM_ARRAY_TASK_ID": "5",
                "SLURM_ARRAY_TASK_COUNT": "4",
                "SLURM_ARRAY_TASK_MIN": "3",
            },
            Shard(2, 4),
        ),
        ({"JOB_COMPLETION_INDEX": "3", "ICANHAZMODEL_SHARD_COUNT": "5"}, Shard(3, 5)),
    ],
)
def test_shard_auto_reads_the_scheduler(env: dict[str, str], expected: Shard) -> None:
    assert parse_shard("auto", env) == expected


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("3/3", {}, "out of range"),
        ("1/0", {}, "out of range"),
        ("one/two", {}, "not K/N"),
        ("auto", {}, "no scheduler variable"),
        ("auto", {"JOB_COMPLETION_INDEX": "1"}, "ICANHAZMODEL_SHARD_COUNT"),
        ("auto", {"RANK": "x", "WORLD_SIZE": "2"}, "whole numbers"),
    ],
)
def test_bad_shards_are_usage_errors(text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_shard(text, env)
