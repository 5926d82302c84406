"""Splitting a prompt into units that can be dropped whole, and the spans that must never be dropped.

A *word* unit is a maximal run of non-space characters together with the spaces before it, so keeping
or dropping units never splits or fuses a word. Line breaks (with the indentation after them) are
*layout* units and always kept, so lines never run together. *Protected* units are always kept byte
for byte: ``<keep>…</keep>`` regions (the markers themselves are removed), fenced code blocks and inline
code, URLs, numbers (when asked), user regexes, markdown table pipes and header rows, and in JSON mode everything
except the words inside string values. A protected span that touches a word protects the whole word.

*Bonds* (:func:`faithful_bonds`) are runs of words that are kept or dropped together: dates ("June 4,
2003"), numbers with their scale ("3.5 million"), multi-word names ("Charles Darwin", "University of
Cambridge") and short quoted strings; a method may drop them, but never cut them apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from tokensift.errors import InputError, InvalidJSONError, ParameterError

UnitKind = Literal["word", "layout", "protected"]
Granularity = Literal["word", "phrase", "sentence"]

KEEP_OPEN, KEEP_CLOSE = "<keep>", "</keep>"
_FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n.*?(?:^[ \t]*\1[^\n]*$|\Z)", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_URL = re.compile(r"(?:https?|ftp)://\S+|www\.\S+")
_NUMBER = re.compile(r"(?<!\w)[-+]?\$?\d[\d,.:/]*%?")
_TABLE_ROW = re.compile(r"^[ \t]*\|.*\|[ \t]*$", re.M)
_TABLE_RULE = re.compile(r"^[ \t]*\|[ \t:|-]+\|[ \t]*$")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")
_PHRASE_END = re.compile(r"[,;:.!?)\]\"]$")
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|"
    r"Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_DAY = re.compile(r"[0-3]?\d(?:st|nd|rd|th)?")
_YEAR = re.compile(r"\d{3,4}s?")
_MONTH_WORD = re.compile(_MONTH)
_ABBREVIATION = re.compile(
    r"(?:[A-Z]\.)+|(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Mt|Ft|Gen|Col|Lt|Sgt|Gov|Sen|Rep|Prof|Rev|No|Vol|"
    r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\."
)
_NUMERIC = re.compile(r"[-+]?[$€£]?\d[\d,.:/]*%?")
_SCALE = frozenset(
    {"hundred", "thousand", "million", "billion", "trillion", "percent", "per", "cent", "%", "bc", "ad", "bce", "ce"}
)
_NAME_LINKS = frozenset(
    {"of", "de", "del", "della", "da", "di", "von", "van", "der", "den", "la", "le", "du", "y", "al"}
)
_OPEN_QUOTE = ('"', "\u201c", "'", "\u2018")
_CLOSE_QUOTE = re.compile(r"[\"\u201d'\u2019][,;:.!?)\]]*$")
_TRAILING = re.compile(r"[,;:.!?)\]\"'\u201d\u2019]+$")
MAX_QUOTE_WORDS = 10
STOPWORDS = frozenset(
    {
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "by",
        "with",
        "and",
        "or",
        "but",
        "nor",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "that",
        "which",
        "who",
        "whom",
        "whose",
        "this",
        "these",
        "those",
        "it",
        "its",
        "than",
        "then",
        "so",
        "if",
        "because",
        "while",
        "about",
        "into",
        "over",
        "after",
        "before",
    }
)


_NOT_NAMES = STOPWORDS | frozenset(
    [
        "he",
        "she",
        "they",
        "we",
        "i",
        "you",
        "his",
        "her",
        "their",
        "our",
        "my",
        "your",
        "there",
        "here",
        "when",
        "where",
        "what",
        "how",
        "why",
        "although",
        "though",
        "since",
        "during",
        "however",
        "also",
        "not",
        "no",
        "all",
        "some",
        "many",
        "most",
        "each",
        "every",
        "both",
        "such",
        "until",
        "unless",
        "once",
        "today",
        "later",
    ]
)
"""Capitalised words that start sentences rather than names."""


@dataclass(frozen=True)
class Protect:
    """What is always kept. ``json``: None detects JSON input, True requires it, False never treats it so."""

    code: bool = True
    urls: bool = True
    numbers: bool = False
    tables: bool = True
    markers: bool = True
    patterns: tuple[str, ...] = ()
    json: bool | None = None

    def compiled(self) -> list[re.Pattern[str]]:
        """The user patterns, compiled; an invalid regex is a :class:`ParameterError`."""
        found = []
        for pattern in self.patterns:
            try:
                found.append(re.compile(pattern))
            except re.error as exc:
                raise ParameterError(f"protect pattern {pattern!r} is not a valid regex: {exc}") from None
        return found


@dataclass(frozen=True)
class Unit:
    """A piece of one part's text, ``text == part[start:end]``; only ``word`` units may be dropped."""

    text: str
    start: int
    end: int
    part: int
    kind: UnitKind

    @property
    def droppable(self) -> bool:
        return self.kind == "word"


@dataclass
class Segmented:
    """The input cut into units. ``parts`` are the texts (markers removed): one, or one per document/message."""

    parts: list[str]
    units: list[Unit]
    json_parts: list[bool] = field(default_factory=list)
    bonds: list[list[int]] = field(default_factory=list)
    """Runs of word units kept or dropped whole (:func:`faithful_bonds`, plus phrases or sentences when asked)."""

    def part_units(self, part: int) -> list[int]:
        return [i for i, u in enumerate(self.units) if u.part == part]


def strip_markers(text: str) -> tuple[str, list[tuple[int, int]]]:
    """Remove ``<keep>``/``</keep>`` markers; return the text and the kept regions' spans in it."""
    out: list[str] = []
    regions: list[tuple[int, int]] = []
    pos, length, opened = 0, 0, None
    for match in re.finditer(re.escape(KEEP_OPEN) + "|" + re.escape(KEEP_CLOSE), text):
        out.append(text[pos : match.start()])
        length += match.start() - pos
        pos = match.end()
        if match.group() == KEEP_OPEN:
            if opened is not None:
                raise InputError(f"nested {KEEP_OPEN} at character {match.start()}; close the first region")
            opened = length
        else:
            if opened is None:
                raise InputError(f"{KEEP_CLOSE} at character {match.start()} has no matching {KEEP_OPEN}")
            regions.append((opened, length))
            opened = None
    if opened is not None:
        raise InputError(f"{KEEP_OPEN} opened but never closed (add {KEEP_CLOSE})")
    out.append(text[pos:])
    return "".join(out), regions


def _looks_like_json(text: str) -> bool:
    stripped = text.strip()
    return stripped[:1] in "{[" and stripped[-1:] in "}]"


def _json_protected(text: str) -> list[tuple[int, int]]:
    """Everything but the inside of string *values*: keys, numbers, literals and syntax stay."""
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidJSONError(f"input is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    spans, pos = [], 0
    for match in _JSON_STRING.finditer(text):
        is_key = text[match.end() :].lstrip().startswith(":")
        if not is_key and match.end() - match.start() > 2:
            spans.append((pos, match.start() + 1))
            pos = match.end() - 1
    spans.append((pos, len(text)))
    return spans


def _table_protected(text: str) -> list[tuple[int, int]]:
    """Markdown tables: header and rule rows whole, pipes of body rows."""
    spans: list[tuple[int, int]] = []
    rows = list(_TABLE_ROW.finditer(text))
    for i, row in enumerate(rows):
        is_rule_next = i + 1 < len(rows) and _TABLE_RULE.match(rows[i + 1].group()) is not None
        contiguous_next = i + 1 < len(rows) and text[row.end() : rows[i + 1].start()].strip() == ""
        if _TABLE_RULE.match(row.group()) or (is_rule_next and contiguous_next):
            spans.append((row.start(), row.end()))
        else:
            spans += [(row.start() + j, row.start() + j + 1) for j, ch in enumerate(row.group()) if ch == "|"]
    return spans


def protected_spans(text: str, protect: Protect, markers: Sequence[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """Character spans of ``text`` that must be kept (before widening to whole words)."""
    spans = list(markers)
    patterns: list[re.Pattern[str]] = []
    if protect.code:
        patterns += [_FENCE, _INLINE_CODE]
    if protect.urls:
        patterns.append(_URL)
    if protect.numbers:
        patterns.append(_NUMBER)
    patterns += protect.compiled()
    for pattern in patterns:
        spans += [(m.start(), m.end()) for m in pattern.finditer(text) if m.end() > m.start()]
    if protect.tables:
        spans += _table_protected(text)
    return spans


def _mask(text: str, spans: Sequence[tuple[int, int]], *, widen: bool = True) -> list[bool]:
    """Per-character protection; ``widen`` makes every non-space run wholly protected or not, so a
    kept span never fuses with a neighbour when the words around it are dropped."""
    mask = [False] * len(text)
    for start, end in spans:
        mask[start:end] = [True] * (end - start)
    if widen:
        for run in re.finditer(r"\S+", text):
            if any(mask[run.start() : run.end()]):
                mask[run.start() : run.end()] = [True] * (run.end() - run.start())
    return mask


def _atoms(text: str, mask: Sequence[bool]) -> list[tuple[int, int]]:
    """Non-space runs, cut where protection changes (only inside JSON strings, where quotes are kept)."""
    found = []
    for run in re.finditer(r"\S+", text):
        start = run.start()
        for i in range(run.start() + 1, run.end()):
            if mask[i] != mask[i - 1]:
                found.append((start, i))
                start = i
        found.append((start, run.end()))
    return found


def split_part(text: str, part: int, mask: Sequence[bool]) -> list[Unit]:
    """Cut one part into word, layout and protected units that concatenate back to ``text``."""
    units: list[Unit] = []

    def add(start: int, end: int, kind: UnitKind) -> None:
        if end <= start:
            return
        last = units[-1] if units else None
        if kind == "protected" and last is not None and last.kind == "protected" and last.end == start:
            units[-1] = Unit(text[last.start : end], last.start, end, part, "protected")
        else:
            units.append(Unit(text[start:end], start, end, part, kind))

    pos = 0
    for start, end in _atoms(text, mask):
        space = text[pos:start]
        if start > pos and mask[pos]:  # space inside a protected region (code block, table row, JSON syntax)
            add(pos, end, "protected")
        elif "\n" in space:
            add(pos, start, "layout")
            add(start, end, "protected" if mask[start] else "word")
        else:
            add(pos, end, "protected" if mask[start] else "word")
        pos = end
    add(pos, len(text), "protected" if pos < len(text) and mask[pos] else "layout")
    return units


def segment(parts: Sequence[str], protect: Protect, units: Granularity = "word") -> Segmented:
    """Strip markers, find protected spans, cut every part into units and bond the words that belong
    together: always dates, numbers with their scale, names and quotations; phrases or sentences when
    ``units`` asks for them (every method then keeps or drops them whole)."""
    if units not in ("word", "phrase", "sentence"):
        raise ParameterError(f"units must be word, phrase or sentence, got {units!r}", option="units")
    clean_parts: list[str] = []
    found: list[Unit] = []
    json_parts: list[bool] = []
    for index, raw in enumerate(parts):
        text, regions = strip_markers(raw) if protect.markers else (raw, [])
        as_json = protect.json if protect.json is not None else _looks_like_json(text) and _parses(text)
        spans = _json_protected(text) if as_json else []
        spans += protected_spans(text, protect, regions)
        clean_parts.append(text)
        json_parts.append(bool(as_json))
        found += split_part(text, index, _mask(text, spans, widen=not as_json))
    segmented = Segmented(clean_parts, found, json_parts)
    segmented.bonds = faithful_bonds(segmented)
    if units != "word":
        segmented.bonds += [group for group in group_units(segmented, units) if len(group) > 1]
    return segmented


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def group_units(segmented: Segmented, level: Granularity) -> list[list[int]]:
    """Droppable units grouped into lexical units: words, phrases or sentences (never across a kept unit).

    Phrases follow a light chunker in the spirit of Selective Context's noun phrases (Li et al., 2023):
    a phrase ends at punctuation and a new one starts at a function word after content words.
    """
    groups: list[list[int]] = []
    current: list[int] = []

    def close() -> None:
        if current:
            groups.append(current.copy())
            current.clear()

    for index, unit in enumerate(segmented.units):
        if not unit.droppable:
            close()
            continue
        word = unit.text.strip()
        if level == "phrase" and current and word.lower() in STOPWORDS:
            previous = segmented.units[current[-1]].text.strip().lower()
            if previous not in STOPWORDS:
                close()
        current.append(index)
        if _ends_unit(level, word, len(current)):
            close()
    close()
    return groups


def _ends_unit(level: Granularity, word: str, size: int) -> bool:
    """Whether a lexical unit at ``level`` ends after ``word`` (the ``size``-th word of the unit)."""
    if level == "phrase":
        return bool(_PHRASE_END.search(word)) or size >= 6
    if level == "sentence":
        return bool(_SENTENCE_END.search(word))
    return True


def _core(word: str) -> str:
    """A word without the punctuation around it."""
    return word.strip("\"'()[]{}\u201c\u201d\u2018\u2019,;:.!?")


def _closes(word: str) -> bool:
    """Whether punctuation after ``word`` ends a run (a comma, a full stop, a bracket, but not "Dr." or "J.")."""
    return bool(_TRAILING.search(word)) and not is_abbreviation(word)


def is_abbreviation(word: str) -> bool:
    """Whether the full stop of ``word`` belongs to an abbreviation or initials ("Dr.", "J.", "U.S.")."""
    return _ABBREVIATION.fullmatch(word.lstrip("\"'(\u201c\u2018")) is not None


def _capitalised(word: str) -> bool:
    core = _core(word)
    return bool(core) and core[0].isupper()


def _date_length(words: Sequence[str], at: int) -> int:
    """Words of a date starting at ``words[at]`` ("June 4, 2003", "4 June 2003", "June 2003"), else 0."""

    def day(k: int) -> bool:
        return k < len(words) and _DAY.fullmatch(_core(words[k])) is not None

    def year(k: int) -> bool:
        return k < len(words) and _YEAR.fullmatch(_core(words[k])) is not None

    def month(k: int) -> bool:
        return k < len(words) and _MONTH_WORD.fullmatch(_core(words[k])) is not None

    def open_after(k: int) -> bool:  # a comma may sit inside a date ("June 4, 2003")
        return not _closes(words[k]) or words[k].endswith(",")

    if month(at) and not _closes(words[at]):
        if day(at + 1):
            return 3 if open_after(at + 1) and year(at + 2) else 2
        return 2 if year(at + 1) else 0
    if day(at) and not _closes(words[at]) and month(at + 1):
        return 3 if not _closes(words[at + 1]) and year(at + 2) else 2
    return 0


def _bond_length(words: Sequence[str], at: int) -> int:
    """How many words from ``words[at]`` on are one faithful unit (1 when the word stands alone)."""
    word = words[at]
    date = _date_length(words, at)
    if date:
        return date
    core = _core(word)
    if _NUMERIC.fullmatch(core) and not _closes(word):
        size = 1
        while at + size < len(words) and _core(words[at + size]).lower() in _SCALE and size < 3:
            size += 1
            if _closes(words[at + size - 1]):
                break
        return size
    if word.startswith(_OPEN_QUOTE) and not _CLOSE_QUOTE.search(word):
        for size in range(2, MAX_QUOTE_WORDS + 1):
            if at + size > len(words):
                break
            if _CLOSE_QUOTE.search(words[at + size - 1]) and words[at + size - 1][0] not in _OPEN_QUOTE:
                return size
    if _capitalised(word) and (core.lower() not in _NOT_NAMES or core == "The") and not _closes(word):
        size = 1
        while at + size < len(words):
            nxt = words[at + size]
            if _core(nxt).lower() in _NAME_LINKS and at + size + 1 < len(words) and not _closes(nxt):
                if _capitalised(words[at + size + 1]):
                    size += 2
                else:
                    break
            elif _capitalised(nxt) or _NUMERIC.fullmatch(_core(nxt)) is not None:
                size += 1
            else:
                break
            if _closes(words[at + size - 1]):
                break
        if size > 1:
            return size
    return 1


def faithful_bonds(segmented: Segmented) -> list[list[int]]:
    """Runs of consecutive word units that must be kept or dropped whole (dates, numbers with their scale,
    multi-word names, short quotations); runs never cross a kept unit or a line break."""
    bonds: list[list[int]] = []
    run: list[int] = []

    def scan() -> None:
        words = [segmented.units[i].text.strip() for i in run]
        at = 0
        while at < len(words):
            size = _bond_length(words, at)
            if size > 1:
                bonds.append(run[at : at + size])
            at += size
        run.clear()

    for index, unit in enumerate(segmented.units):
        if unit.droppable:
            run.append(index)
        else:
            scan()
    scan()
    return bonds


BlockLevel = Literal["auto", "document", "paragraph", "sentence", "documents-or-paragraphs"]


def _paragraphs(segmented: Segmented, within: Sequence[int]) -> list[list[int]]:
    found: list[list[int]] = [[]]
    for index in within:
        found[-1].append(index)
        unit = segmented.units[index]
        if unit.kind == "layout" and unit.text.count("\n") >= 2:
            found.append([])
    return [b for b in found if b]


def _sentences(segmented: Segmented, within: Sequence[int]) -> list[list[int]]:
    found: list[list[int]] = [[]]
    for index in within:
        found[-1].append(index)
        unit = segmented.units[index]
        word = unit.text.strip()
        if unit.kind == "layout" or (_SENTENCE_END.search(word) is not None and not is_abbreviation(word)):
            found.append([])
    merged: list[list[int]] = []
    for block in found:  # a line break alone is no sentence: it joins the one before
        if merged and all(segmented.units[i].kind == "layout" for i in block):
            merged[-1] += block
        elif block:
            merged.append(block)
    return merged


def blocks(segmented: Segmented, level: BlockLevel = "auto") -> list[list[int]]:
    """Coarse segments for document-level stages, as unit indices.

    ``document``: the parts (documents or messages); ``paragraph``: units between blank lines inside each
    part; ``sentence``: sentences (and lines) inside each paragraph. ``auto`` takes the first level that
    gives more than one block: the parts if there are several, else the paragraphs, else the sentences
    (so a single text given as is still has something to rank). ``documents-or-paragraphs`` never goes to
    sentences: LLMLingua's and LongLLMLingua's own controllers, which rank contexts, not sentences.
    """
    parts = [segmented.part_units(p) for p in range(len(segmented.parts))]
    several = len(parts) > 1
    if level == "document" or (level in ("auto", "documents-or-paragraphs") and several):
        return [p for p in parts if p]
    paragraphs = [b for p in parts for b in _paragraphs(segmented, p)]
    if level in ("paragraph", "documents-or-paragraphs") or (level == "auto" and len(paragraphs) > 1):
        return paragraphs
    return [s for b in paragraphs for s in _sentences(segmented, b)]
