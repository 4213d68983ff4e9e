"""Synthetic generators, answer extraction/scoring and the task registry."""

from __future__ import annotations

import re
import string

import pytest

from ponder.data import (
    DEMO_TASK,
    WORDS,
    Addition,
    ListSort,
    Multiplication,
    ShiftCipher,
    Task,
    UnknownTaskError,
    get_task,
    is_held_out,
    known_tasks,
)

PRINTABLE = set(string.printable[:95])
ALL_SYNTHETIC = [
    Addition(4),
    Addition(1),
    Multiplication(2),
    Multiplication(3, 2),
    ShiftCipher(),
    ShiftCipher(max_words=3),
    ListSort(),
    ListSort(3),
]


def _check_addition(p) -> None:
    digits = []
    carry = 0
    for step in p.thought.split():
        x, y, c, s = map(int, re.fullmatch(r"(\d)\+(\d)\+(\d)=(\d\d)", step).groups())
        assert c == carry and x + y + c == s
        digits.append(s % 10)
        carry = s // 10
    assert int(str(carry) + "".join(map(str, reversed(digits)))) == int(p.answer)
    a, b = map(int, p.prompt.rstrip("=").split("+"))
    assert int(p.answer) == a + b


def _check_multiplication(p) -> None:
    a, b = map(int, p.prompt.rstrip("=").split("*"))
    steps = p.thought.split()
    partials = []
    for i, step in enumerate(steps[: len(str(b))]):
        x, y, z = map(int, re.fullmatch(r"(\d+)\*(\d+)=(\d+)", step).groups())
        assert x == a and y == int(str(b)[::-1][i]) * 10**i and z == x * y
        partials.append(z)
    total = partials[0]
    for step, p_ in zip(steps[len(str(b)) :], partials[1:]):
        x, y, z = map(int, re.fullmatch(r"(\d+)\+(\d+)=(\d+)", step).groups())
        assert (x, y) == (total, p_) and z == x + y
        total = z
    assert str(total) == p.answer == str(a * b)


def _check_cipher(p) -> None:
    k, cipher = re.fullmatch(r"decode (\d+): ([a-z ]+)=", p.prompt).groups()
    out = []
    for step, c in zip(p.thought.split(" "), cipher):
        if c == " ":
            assert step == "_"
            out.append(" ")
            continue
        src, kk, dst = re.fullmatch(r"([a-z])-(\d+)=([a-z])", step).groups()
        assert src == c and kk == k and (ord(src) - ord(dst)) % 26 == int(k)
        out.append(dst)
    assert "".join(out) == p.answer
    assert all(w in WORDS for w in p.answer.split(" "))


def _check_sort(p) -> None:
    values = list(map(int, re.fullmatch(r"sort ([\d,]+)=", p.prompt)[1].split(",")))
    rest, mins = values, []
    for m, r in re.findall(r"min (\d+)(?: rest ([\d,]+))?", p.thought):
        assert int(m) == min(rest)
        expected = list(rest)
        expected.remove(int(m))
        assert (list(map(int, r.split(","))) if r else []) == expected
        rest = expected
        mins.append(int(m))
    assert rest == [] and ",".join(map(str, mins)) == p.answer == ",".join(map(str, sorted(values)))


CHECKS = {
    Addition: _check_addition,
    Multiplication: _check_multiplication,
    ShiftCipher: _check_cipher,
    ListSort: _check_sort,
}


@pytest.mark.parametrize("task", ALL_SYNTHETIC, ids=lambda t: f"{t.name}")
def test_scratchpads_reproduce_the_answer(task):
    assert isinstance(task, Task)
    for p in task.problems(200, seed=3) + task.problems(50, seed=3, split="test"):
        CHECKS[type(task)](p)
        assert set(p.prompt + p.thought + p.answer) <= PRINTABLE
        assert task.score(p, f"<think>{p.thought}</think>{p.answer}") == 1.0


def test_hand_computed_examples():
    add = Addition(4).make(1234, 5678)
    assert (add.prompt, add.thought, add.answer) == ("1234+5678=", "4+8+0=12 3+7+1=11 2+6+1=09 1+5+0=06", "6912")
    c = ShiftCipher().make("hello", 3)
    assert (c.prompt, c.thought, c.answer) == ("decode 3: khoor=", "k-3=h h-3=e o-3=l o-3=l r-3=o", "hello")
    wrap = ShiftCipher().make("zoo ax", 2)
    assert wrap.prompt == "decode 2: bqq cz=" and wrap.thought == "b-2=z q-2=o q-2=o _ c-2=a z-2=x"
    s = ListSort(4).make([5, 3, 9, 1])
    assert (s.prompt, s.answer) == ("sort 5,3,9,1=", "1,3,5,9")
    assert s.thought == "min 1 rest 5,3,9 min 3 rest 5,9 min 5 rest 9 min 9"
    dup = ListSort(3).make([2, 0, 2])
    assert dup.thought == "min 0 rest 2,2 min 2 rest 2 min 2" and dup.answer == "0,2,2"


@pytest.mark.parametrize("task", ALL_SYNTHETIC, ids=lambda t: f"{t.name}")
def test_splits_are_disjoint_and_seeds_reproducible(task):
    train = task.problems(300, seed=0)
    test = task.problems(100, seed=0, split="test")
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    assert all(not is_held_out(p.prompt) for p in train) and all(is_held_out(p.prompt) for p in test)
    assert task.problems(20, seed=5) == task.problems(20, seed=5)
    assert task.problems(20, seed=5) != task.problems(20, seed=6)


def test_cipher_shift_range_and_options():
    t = ShiftCipher(shifts=(4, 6))
    assert {p.meta["shift"] for p in t.problems(100)} == {4, 5, 6}
    assert any(" " in p.answer for p in ShiftCipher(max_words=2).problems(50))
    for bad in [(0, 3), (5, 4), (1, 26)]:
        with pytest.raises(ValueError, match="shifts"):
            ShiftCipher(shifts=bad)
    assert len(ListSort(7, max_value=3).problems(1)[0].meta["values"]) == 7
    assert all(v <= 3 for p in ListSort(7, max_value=3).problems(30) for v in p.meta["values"])


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("6912", "6912"),
        ("  6912  \nmore text", "6912"),
        ("<think>4+8+0=12</think>6912", "6912"),
        ("<think>a</think>\n\n 6912\n", "6912"),
        ("<think>4+8+0=12", None),  # thought never closed
        ("<think>x</think>", None),  # no answer after the thought
        ("", None),
        ("   \n  ", None),
    ],
)
def test_extract_answer(completion, expected):
    assert Addition(4).extract_answer(completion) == expected


def test_score_hand_cases():
    t = Addition(4)
    p = t.make(1234, 5678)
    assert t.score(p, "6912") == 1.0
    assert t.score(p, "<think>whatever</think>6912") == 1.0
    assert t.score(p, "<think>6912") == 0.0  # the answer inside an unclosed thought does not count
    assert t.score(p, "<think>6912</think>6913") == 0.0
    assert t.score(p, "6913") == 0.0
    c = ShiftCipher().make("hello", 3)
    assert ShiftCipher().score(c, " Hello.\n") == 1.0  # normalised: case, space, trailing dot


def test_registry_specs():
    assert DEMO_TASK in known_tasks() and get_task(DEMO_TASK).name == DEMO_TASK
    for spec, cls, name in [
        ("add4", Addition, "add4"),
        ("add3", Addition, "add3"),
        ("add12", Addition, "add12"),
        ("mul2", Multiplication, "mul2"),
        ("mul3x2", Multiplication, "mul3x2"),
        ("cipher", ShiftCipher, "cipher"),
        ("sort", ListSort, "sort"),
        ("sort7", ListSort, "sort7"),
    ]:
        task = get_task(spec)
        assert isinstance(task, cls) and task.name == name
    assert get_task("add3").digits == 3 and get_task("sort7").length == 7
    for spec in known_tasks():
        assert get_task(spec).problems(2)


@pytest.mark.parametrize("spec", ["nope", "add0", "sort1", "mul0", "addition", "foo.txt"])
def test_unknown_task_lists_names(spec):
    with pytest.raises(UnknownTaskError) as err:
        get_task(spec)
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert repr(spec) in msg and "rg:<dataset>" in msg and ".json" in msg
    assert all(name in msg for name in known_tasks())


def test_thought_budget_is_twice_the_longest_scratchpad_and_a_given_budget_wins():
    from ponder.data.task import task_thought_budget, thought_budget

    task = Addition(4)
    longest = max(len(p.thought) for p in task.problems(50, seed=0))
    assert longest > 16 and thought_budget(task) == 2 * longest
    assert task_thought_budget(task, None) == thought_budget(task)
    assert task_thought_budget(task, 7) == 7

    class NoScratchpads:  # a task that cannot write its own (reasoning-gym, BIG-bench): the fixed default
        pass

    assert task_thought_budget(NoScratchpads(), None) == 256
