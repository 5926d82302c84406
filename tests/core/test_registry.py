"""The registry comes from the method classes, and nothing else lists methods."""

import dataclasses
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from tokensift.errors import ParameterError, UnknownMethodError
from tokensift.kv.methods.adakv import AdaKV
from tokensift.kv.methods.kvzip import KVzip
from tokensift.kv.methods.snapkv import SnapKV
from tokensift.kv.press import ScorerPress
from tokensift.methods import TARGETS, accepts, build, compositions, get_method, list_methods, names, parse, resolve
from tokensift.registry import BUDGET_FIELDS, Paper, register

ROOT = Path(__file__).resolve().parents[2]


def test_every_method_declares_itself_and_cites_its_paper_with_its_id():
    found = list_methods()
    assert {m.target for m in found} >= {"kv", "text", "encoder"}
    for m in found:
        assert m.cls.name == m.name and m.cls.target == m.target and m.summary
        assert m.cls.__module__ == f"tokensift.{m.target}.methods.{m.cls.__module__.rsplit('.', 1)[1]}"
        if m.baseline:
            # only the random controls and training's full loss have no paper
            assert m.name == "random" or (m.target, m.name) == ("training", "none"), m.name
            continue
        if m.paper.arxiv is None and m.paper.doi is None:  # proceedings only (CaM): the venue and a link
            assert m.paper.venue and m.paper.url.startswith("https://"), m.name
        else:
            assert re.fullmatch(r"arXiv:\d{4}\.\d{4,5}|doi:.+", m.paper.id), m.name
        docs = (sys.modules[m.cls.__module__].__doc__ or "") + (m.cls.__doc__ or "")
        assert (m.paper.arxiv and m.paper.arxiv in docs) or m.paper.title.split(":")[0] in docs, (
            f"{m.name}: docstring must cite the paper"
        )


def test_options_and_defaults_are_the_dataclass_fields():
    snap = get_method("snapkv", "kv")
    assert snap.options() == {"protect_first": 0, "protect_last": 0, "window": 32, "kernel": 7}
    assert get_method("adakv", "kv").options() == {"safeguard": 0.2} and get_method("adakv", "kv").wraps == "snapkv"
    for m in list_methods():
        fields = {f.name for f in dataclasses.fields(m.cls) if f.init}
        assert set(m.options()) == fields - set(BUDGET_FIELDS) - {"press"}


def test_compositions_build_by_name_and_route_options_to_the_part_that_has_them():
    press = build("kv", "adakv:snapkv", ratio=0.5, window=4, safeguard=0.1)
    assert press == AdaKV(press=SnapKV(ratio=0.5, window=4), safeguard=0.1)
    assert press.spec == "adakv:snapkv" and press.scorer.ratio == 0.5
    assert build("kv", "adakv", window=4) == AdaKV(press=SnapKV(window=4))  # a wrapper alone wraps its default
    nested = build("kv", "pyramidkv:adakv:kvzip", keep=0.25, chunk=64, beta=5.0)
    assert nested.spec == "pyramidkv:adakv:kvzip" and nested.beta == 5.0 and nested.scorer.chunk == 64
    assert build("kv", "chunkkv:kvzip", **{"kvzip.chunk": 64}).scorer.chunk == 64
    assert build("kv", "chunkkv:kvzip", chunk=5).chunk == 5  # unqualified: the outermost part that has it
    assert [p.name for p in parse("kv", "chunkkv")] == ["chunkkv", "snapkv"]
    assert accepts("kv", "adakv:kvzip", "tokenizer") and not accepts("kv", "adakv", "tokenizer")
    wrappers = [m for m in list_methods("kv") if m.wraps]
    scorers = [m for m in list_methods("kv") if not m.wraps and m.cls.stage == "cache"]
    reducing = {m.name for m in list_methods("kv") if m.cls.reducer}  # packing / merging: one per composition
    assert {"quant", "merge"} <= reducing
    assert sorted(compositions("kv")) == sorted(
        f"{w.name}:{s.name}" for w in wrappers for s in scorers if not {w.name, s.name} <= reducing
    )
    assert "quant2:kvzip" in compositions("kv") and "quant2:mikv" not in compositions("kv")
    same = SnapKV(ratio=0.5)
    assert resolve("kv", same) is same


@pytest.mark.parametrize(
    "spec,options,option",
    [
        ("snapkv", {"colour": 1}, "colour"),
        ("snapkv", {"window": "abc"}, "window"),
        ("snapkv", {"window": 0}, "window"),
        ("snapkv", {"window": 2.5}, "window"),
        ("snapkv", {"ratio": 1.0}, "ratio"),
        ("snapkv", {"ratio": float("nan")}, "ratio"),
        ("snapkv", {"ratio": 0.5, "keep": 0.5}, "keep"),
        ("snapkv", {"keep_tokens": -3}, "keep_tokens"),
        ("adakv", {"safeguard": 1.5}, "safeguard"),
        ("h2o", {"forgetting": 0.0}, "forgetting"),
        ("snapkv:knorm", {}, "method"),
        ("nope", {}, "method"),
        ("adakv:nope", {}, "method"),
        ("", {}, "method"),
    ],
)
def test_bad_names_and_options_are_parameter_errors_naming_the_option(spec, options, option):
    with pytest.raises(ParameterError) as info:
        build("kv", spec, **options)
    assert info.value.option == option


def test_lookup_errors():
    with pytest.raises(UnknownMethodError) as info:
        get_method("nope", "kv")
    assert str(info.value) == f"unknown kv method 'nope'; known: {', '.join(names('kv'))}"
    with pytest.raises(ParameterError, match="unknown target"):
        list_methods("audio")
    with pytest.raises(ParameterError, match="is not a kv method"):
        resolve("kv", object())
    with pytest.raises(ParameterError, match="give window to its constructor"):
        resolve("kv", SnapKV(), window=3)
    assert set(TARGETS) == {"kv", "text", "encoder", "vision", "training"}


def test_the_decorator_reads_the_class_and_refuses_what_it_cannot_register():
    with pytest.raises(TypeError, match="already registered"):

        @register
        @dataclass
        class Another(ScorerPress):
            name: ClassVar[str] = "snapkv"
            summary: ClassVar[str] = "a second snapkv"

    with pytest.raises(TypeError, match="must be a dataclass"):
        register(type("Plain", (), {"name": "plain", "target": "kv", "summary": "x"}))
    with pytest.raises(TypeError, match="one-line summary"):
        register(dataclass(type("NoSummary", (ScorerPress,), {"name": "no_summary"})))
    with pytest.raises(ValueError, match="needs an arXiv id, a DOI"):
        Paper("A, 2024", "Untraceable")
    assert register(KVzip) is KVzip  # registering the same class again is harmless


LISTED_ELSEWHERE = [
    "src",
    "tests",
    "scripts",
    "docs",
    "benchmarks/run-kv.sh",
    "benchmarks/run-text.sh",
    "benchmarks/run-training.sh",
    "benchmarks/kv_results.py",
    "README.md",
]
GENERATED = re.compile(r"<!-- methods:start -->.*?<!-- methods:end -->", re.S)


def method_lists(text: str, known: list[str]) -> list[str]:
    """Runs of three or more different method names separated only by commas, quotes and spaces."""
    names_alt = "|".join(sorted(map(re.escape, known), key=len, reverse=True))
    item = rf"[\"'`]?\b(?:{names_alt})\b[\"'`]?"
    found = []
    for run in re.finditer(rf"{item}(?:\s*[,;]\s*(?:and\s+|or\s+)?{item}){{2,}}", text):
        if len(set(re.findall(rf"\b(?:{names_alt})\b", run.group(0)))) >= 3:
            found.append(run.group(0))
    return found


def test_method_lists_are_read_from_the_registry_never_written_out():
    offenders = []
    for target in ("kv", "text", "encoder", "training"):
        known = names(target)
        for entry in LISTED_ELSEWHERE:
            path = ROOT / entry
            kinds = {".py", ".md", ".sh"}
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in kinds)
            for file in files:
                text = GENERATED.sub("", file.read_text(encoding="utf-8"))
                offenders += [f"{file.relative_to(ROOT)}: {hit}" for hit in method_lists(text, known)]
    assert not offenders, "\n".join(offenders)
    assert method_lists('methods = ["snapkv", "knorm",\n  "h2o"]', names("kv"))  # the check does see a list


def test_the_readme_method_table_is_the_registry():
    from tokensift.cli import method_table

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = GENERATED.search(readme)
    assert block is not None, "README.md lacks the generated method table"
    expected = f"<!-- methods:start -->\n{method_table(list_methods())}\n<!-- methods:end -->"
    assert block.group(0) == expected, "regenerate it: .venv/bin/tokensift methods --readme README.md"


def test_every_method_class_is_exported_by_its_target_face():
    import tokensift.encoder
    import tokensift.kv
    import tokensift.text

    faces = {"kv": tokensift.kv, "text": tokensift.text, "encoder": tokensift.encoder}
    for m in list_methods():
        if m.target in faces:
            assert getattr(faces[m.target], m.cls.__name__) is m.cls
            assert m.cls.__name__ in faces[m.target].__all__
    assert inspect.isfunction(tokensift.kv.compress) and inspect.isfunction(tokensift.text.compress)
