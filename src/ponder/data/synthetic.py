"""Seeded synthetic reasoning tasks with worked scratchpads.

Each scratchpad spells out the intermediate steps so that a small model can get the answer
by local computations it could not do in one shot; that is what makes these tasks a place
where thinking can help.
"""

from __future__ import annotations

from ponder.data.task import GeneratedTask, Problem


class Addition(GeneratedTask):
    """``a+b=`` with operands of ``min_digits`` to ``digits`` digits (each drawn independently).

    Scratchpad: one step per column from the right, ``x+y+c=ss`` (carry in ``c``, two-digit
    sum ``ss`` whose first digit is the next carry; a missing digit of the shorter operand is
    0), e.g. for 1234+5678: ``4+8+0=12 3+7+1=11 2+6+1=09 1+5+0=06``; the answer 6912 is read
    off the steps. With variable lengths the model must align digits from the right, which
    fixed-width problems let it do by absolute position.
    """

    def __init__(self, digits: int = 4, min_digits: int | None = None):
        min_digits = digits if min_digits is None else min_digits
        if not 1 <= min_digits <= digits:
            raise ValueError("need 1 <= min_digits <= digits")
        self.digits, self.min_digits = digits, min_digits
        self.name = f"add{digits}" if min_digits == digits else f"add{min_digits}-{digits}"

    def make(self, a: int, b: int) -> Problem:
        width = max(len(str(a)), len(str(b)), 1)
        xs, ys = str(a).zfill(width), str(b).zfill(width)
        steps, carry = [], 0
        for x, y in zip(reversed(xs), reversed(ys)):
            s = int(x) + int(y) + carry
            steps.append(f"{x}+{y}+{carry}={s:02d}")
            carry = s // 10
        return Problem(prompt=f"{a}+{b}=", answer=str(a + b), thought=" ".join(steps), meta={"a": a, "b": b})

    def _operand(self, rng) -> int:
        n = rng.randint(self.min_digits, self.digits)
        return rng.randint(0 if n == 1 else 10 ** (n - 1), 10**n - 1)

    def sample(self, rng) -> Problem:
        return self.make(self._operand(rng), self._operand(rng))


class Multiplication(GeneratedTask):
    """``a*b=`` with a ``digits``-digit ``a`` and a one-digit ``b``... generalised by ``b_digits``.

    Scratchpad: ``a`` times each digit of ``b`` from the right, shifted, then the running sum,
    e.g. for 123*45: ``123*5=615 123*40=4920 615+4920=5535``.
    """

    def __init__(self, digits: int = 2, b_digits: int | None = None):
        self.digits = digits
        self.b_digits = b_digits or digits
        self.name = f"mul{digits}" if self.b_digits == digits else f"mul{digits}x{self.b_digits}"

    def make(self, a: int, b: int) -> Problem:
        partials, steps = [], []
        for i, d in enumerate(reversed(str(b))):
            p = a * int(d) * 10**i
            partials.append(p)
            steps.append(f"{a}*{int(d) * 10**i}={p}")
        total = partials[0]
        for p in partials[1:]:
            steps.append(f"{total}+{p}={total + p}")
            total += p
        return Problem(prompt=f"{a}*{b}=", answer=str(a * b), thought=" ".join(steps), meta={"a": a, "b": b})

    def sample(self, rng) -> Problem:
        a = rng.randint(10 ** (self.digits - 1), 10**self.digits - 1)
        b = rng.randint(10 ** (self.b_digits - 1), 10**self.b_digits - 1)
        return self.make(a, b)


#: Common lower-case English words for :class:`ShiftCipher` (built in: no downloads).
WORDS: tuple[str, ...] = (
    "able",
    "about",
    "after",
    "again",
    "air",
    "all",
    "also",
    "animal",
    "answer",
    "any",
    "apple",
    "around",
    "ask",
    "away",
    "back",
    "ball",
    "bear",
    "because",
    "bed",
    "been",
    "before",
    "bell",
    "best",
    "bird",
    "black",
    "blue",
    "boat",
    "book",
    "both",
    "box",
    "boy",
    "bread",
    "bring",
    "brown",
    "call",
    "came",
    "can",
    "car",
    "care",
    "carry",
    "cat",
    "change",
    "city",
    "clean",
    "close",
    "cold",
    "come",
    "could",
    "cow",
    "cup",
    "cut",
    "dark",
    "day",
    "deep",
    "dog",
    "door",
    "down",
    "draw",
    "dream",
    "drink",
    "each",
    "early",
    "earth",
    "east",
    "eat",
    "egg",
    "end",
    "even",
    "every",
    "eye",
    "face",
    "fall",
    "far",
    "farm",
    "fast",
    "fat",
    "field",
    "find",
    "fire",
    "first",
    "fish",
    "five",
    "flower",
    "fly",
    "food",
    "foot",
    "four",
    "friend",
    "frog",
    "from",
    "full",
    "funny",
    "game",
    "garden",
    "girl",
    "give",
    "glad",
    "gold",
    "good",
    "grass",
    "great",
    "green",
    "grow",
    "hand",
    "happy",
    "hard",
    "hat",
    "have",
    "head",
    "hear",
    "heart",
    "help",
    "here",
    "high",
    "hill",
    "hold",
    "home",
    "horse",
    "hot",
    "house",
    "idea",
    "into",
    "jump",
    "just",
    "keep",
    "kind",
    "king",
    "know",
    "lake",
    "land",
    "large",
    "last",
    "laugh",
    "learn",
    "leaf",
    "left",
    "light",
    "like",
    "line",
    "lion",
    "little",
    "live",
    "long",
    "look",
    "love",
    "make",
    "many",
    "milk",
    "moon",
    "more",
    "morning",
    "mother",
    "move",
    "much",
    "music",
    "name",
    "near",
    "never",
    "new",
    "next",
    "night",
    "north",
    "now",
    "number",
    "ocean",
    "old",
    "once",
    "only",
    "open",
    "other",
    "over",
    "paper",
    "park",
    "people",
    "pick",
    "place",
    "plant",
    "play",
    "point",
    "rain",
    "read",
    "red",
    "right",
    "river",
    "road",
    "rock",
    "room",
    "run",
    "sea",
    "seed",
    "seven",
    "ship",
    "shoe",
    "sing",
    "sister",
    "sleep",
    "small",
    "snow",
    "song",
    "soon",
    "star",
    "start",
    "stone",
    "story",
    "sun",
    "table",
    "take",
    "tell",
    "ten",
    "thank",
    "think",
    "three",
    "time",
    "today",
    "tree",
    "true",
    "under",
    "walk",
    "warm",
    "water",
    "white",
    "wind",
    "winter",
    "wish",
    "wood",
    "word",
    "work",
    "world",
    "year",
    "yellow",
)

_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


class ShiftCipher(GeneratedTask):
    """``decode k: <ciphertext>=`` -> the plain text, a Caesar shift by ``k`` undone.

    The plain text is one to ``max_words`` words of :data:`WORDS`; the shift (stated in the
    prompt, so the task is decoding, not code breaking) is drawn from ``shifts`` per problem.
    Scratchpad: one step per character, ``c-k=p`` for a letter (wrapping past ``a``) and ``_``
    for a space, e.g. ``decode 3: khoor=`` -> ``k-3=h h-3=e o-3=l o-3=l r-3=o``, answer
    ``hello``: each step is one lookup in a 26-letter alphabet, the answer is their last
    letters read in order.
    """

    def __init__(self, shifts: tuple[int, int] = (1, 25), max_words: int = 1):
        lo, hi = shifts
        if not 1 <= lo <= hi <= 25:
            raise ValueError(f"shifts must satisfy 1 <= low <= high <= 25, got {shifts}")
        if max_words < 1:
            raise ValueError("max_words must be >= 1")
        self.shifts = (lo, hi)
        self.max_words = max_words
        self.name = "cipher"

    @staticmethod
    def shift(text: str, k: int) -> str:
        """Shift every lower-case letter of ``text`` forward by ``k`` (other characters kept)."""
        return "".join(_ALPHABET[(_ALPHABET.index(c) + k) % 26] if c in _ALPHABET else c for c in text)

    def make(self, plain: str, k: int) -> Problem:
        cipher = self.shift(plain, k)
        steps = ["_" if c == " " else f"{c}-{k}={self.shift(c, -k)}" for c in cipher]
        return Problem(
            prompt=f"decode {k}: {cipher}=", answer=plain, thought=" ".join(steps), meta={"shift": k, "cipher": cipher}
        )

    def sample(self, rng) -> Problem:
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, self.max_words))]
        return self.make(" ".join(words), rng.randint(*self.shifts))


class ListSort(GeneratedTask):
    """``sort 5,3,9,1=`` -> ``1,3,5,9``: ascending order of ``length`` integers in ``0..max_value``.

    Scratchpad: selection sort, one step per output element, ``min m rest r`` where ``m`` is
    the smallest of the numbers still unsorted and ``r`` those left after removing it (its
    first occurrence, order kept), e.g. ``min 1 rest 5,3,9 min 3 rest 5,9 min 5 rest 9 min 9``
    (the last step has no ``rest``). Each step only compares a short list; the answer is the
    ``min`` values in order.
    """

    def __init__(self, length: int = 5, max_value: int = 9):
        if length < 2:
            raise ValueError("length must be >= 2")
        if max_value < 1:
            raise ValueError("max_value must be >= 1")
        self.length = length
        self.max_value = max_value
        self.name = "sort" if length == 5 else f"sort{length}"

    def make(self, values: list[int]) -> Problem:
        rest, steps = list(values), []
        while rest:
            m = min(rest)
            rest.remove(m)
            steps.append(f"min {m} rest {','.join(map(str, rest))}" if rest else f"min {m}")
        return Problem(
            prompt=f"sort {','.join(map(str, values))}=",
            answer=",".join(map(str, sorted(values))),
            thought=" ".join(steps),
            meta={"values": list(values)},
        )

    def sample(self, rng) -> Problem:
        return self.make([rng.randint(0, self.max_value) for _ in range(self.length)])
