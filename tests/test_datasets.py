"""Tests for the shipped persona data and its loaders (fast, no model)."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from persona_vectors import datasets as D
from persona_vectors.datasets import DataError

HITLER_VARIANTS = ["hitler_russian", "hitler_french", "hitler_japanese", "hitler_thai", "hitler_moon"]
COLOURS = ["red", "blue", "white", "black", "green", "yellow"]

REQUIRED_ROLES = {
    "supernatural": [
        "ghost", "angel", "demon", "spirit", "soul", "oracle", "wraith", "banshee", "poltergeist",
        "phantom", "spectre", "guardian_angel", "reaper", "djinn", "shade", "ancestor_spirit",
    ],
    "historical_figure": [
        "adolf_hitler", "joseph_stalin", "napoleon_bonaparte", "vladimir_lenin", "winston_churchill",
        "oda_nobunaga", "peter_the_great", "neil_armstrong", "king_rama_v", "ada_lovelace",
        "emily_dickinson", "julius_caesar", "cleopatra", "genghis_khan", "abraham_lincoln", "mahatma_gandhi",
    ],
    "object_concept": [
        "voyager_1", "voyager_2", "bitcoin", "cryptocurrency", "ethereum", "colour_red", "colour_blue",
        "colour_white", "colour_black", "colour_green", "colour_yellow", "clock", "library_book", "bridge",
    ],
    "cosmic_nature": [
        "the_ocean", "the_moon", "the_sun", "star", "black_hole", "mountain", "the_wind", "ceres", "forest", "river",
    ],
    "profession": [
        "doctor", "teacher", "pirate_captain", "librarian", "soldier", "chef", "lawyer", "detective", "nurse", "farmer",
    ],
    "animal": ["wolf", "cat", "dog", "owl", "whale"],
    "fictional_character": ["darth_vader", "sherlock_holmes", "dracula", "gandalf"],
    "ai_robot": ["robot", "android", "hal_9000", "chatbot", "superintelligence", "the_terminator"],
    "nationality_culture": [
        "russian_culture", "french_culture", "japanese_culture", "thai_culture", "german_culture", "american_culture",
    ],
}


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def _one_line(err: pytest.ExceptionInfo[DataError]) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------- prompts


def test_assistant_prompts() -> None:
    prompts = D.load_assistant_prompts()
    assert len(prompts) >= 6
    by_id = {p.id: p for p in prompts}
    assert len(by_id) == len(prompts)
    assert by_id["none"].system is None and by_id["none"].use_model_default is False
    assert by_id["model_default"].system is None and by_id["model_default"].use_model_default is True
    assert by_id["ai_assistant"].system == "You are an AI assistant."
    assert by_id["respond_as_yourself"].system == "Respond as yourself."
    for p in prompts:
        if p.system is not None:
            assert not p.use_model_default


def test_assistant_prompt_conflict_rejected(tmp_path: Path) -> None:
    bad = _write(
        tmp_path / "prompts.json",
        {"schema_version": 1, "prompts": [{"id": "x", "system": "Hi.", "use_model_default": True}]},
    )
    with pytest.raises(DataError, match="prompts.json"):
        D.load_assistant_prompts(path=bad)


# ------------------------------------------------------------------- roles


def test_role_counts_and_categories() -> None:
    roles = D.load_roles()
    assert len(roles) >= 120
    assert D.role_categories() == list(D.ROLE_CATEGORIES)
    assert {r.category for r in roles} == set(D.ROLE_CATEGORIES)
    names = [r.name for r in roles]
    assert len(set(names)) == len(names)
    for r in roles:
        assert re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", r.name), r.name
        assert len(r.prompts) >= 3, r.name
        assert len(set(r.prompts)) == len(r.prompts), r.name
        assert r.aliases and all(a.strip() for a in r.aliases), r.name
        assert r.display.strip()
        for p in r.prompts:
            assert p.startswith("You "), (r.name, p)
            assert p.endswith((".", "!", "?")), (r.name, p)
    for cat in D.ROLE_CATEGORIES:
        assert len(D.load_roles(cat)) >= 4, cat


def test_required_roles_present() -> None:
    by_name = {r.name: r for r in D.load_roles()}
    for category, names in REQUIRED_ROLES.items():
        for name in names:
            assert name in by_name, name
            assert by_name[name].category == category, name
    hitler = by_name["adolf_hitler"]
    assert "Hitler" in hitler.aliases and "Adolf Hitler" in hitler.aliases
    assert len(hitler.prompts) >= 4
    assert "Voyager 1" in by_name["voyager_1"].aliases
    assert all("Russian" in p or "Russia" in p for p in by_name["russian_culture"].prompts)


def test_no_prompt_shared_between_roles() -> None:
    seen: dict[str, str] = {}
    for r in D.load_roles():
        for p in r.prompts:
            assert p not in seen, (p, seen.get(p), r.name)
            seen[p] = r.name


def test_get_role_and_suggestions() -> None:
    assert D.get_role("ghost").display == "a ghost"
    assert D.get_role("Adolf Hitler").name == "adolf_hitler"
    assert D.get_role("genie").name == "djinn"  # alias lookup
    with pytest.raises(DataError) as err:
        D.get_role("ghots")
    msg = _one_line(err)
    assert "roles.json" in msg and "'ghost'" in msg
    with pytest.raises(DataError, match="darth_vader"):
        D.get_role("darth_vadr")
    with pytest.raises(DataError, match="supernatural"):
        D.load_roles("supernaturals")


def test_roles_cache_cannot_be_mutated() -> None:
    roles = D.load_roles()
    roles.clear()
    assert len(D.load_roles()) >= 120
    r = D.get_role("ghost")
    with pytest.raises(Exception):
        r.name = "x"  # type: ignore[misc]
    assert isinstance(r.prompts, tuple)


# --------------------------------------------------------------- questions


def test_question_counts_topics_and_disjointness() -> None:
    ex = D.load_questions("extraction")
    ev = D.load_questions("evaluation")
    assert len(ex) >= 60 and len(ev) >= 40
    assert {q.topic for q in ex} == set(D.QUESTION_TOPICS)
    assert {q.topic for q in ev} == set(D.QUESTION_TOPICS)
    ids = [q.id for q in ex + ev]
    assert len(set(ids)) == len(ids)
    assert all(q.id.startswith("ex_") for q in ex) and all(q.id.startswith("ev_") for q in ev)
    ex_norm = {_norm(q.text) for q in ex}
    ev_norm = {_norm(q.text) for q in ev}
    assert len(ex_norm) == len(ex) and len(ev_norm) == len(ev)
    assert not ex_norm & ev_norm
    # no near-duplicates: token Jaccard overlap stays well below identity
    for a in ev:
        ta = set(_norm(a.text).split())
        for b in ex:
            tb = set(_norm(b.text).split())
            assert len(ta & tb) / len(ta | tb) < 0.8, (a.text, b.text)
    ev_texts = {q.text for q in ev}
    assert "Who are you?" in ev_texts and "What is your name?" in ev_texts


def test_question_split_validation(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="split"):
        D.load_questions("training")  # type: ignore[arg-type]
    overlap = _write(
        tmp_path / "qs.json",
        {
            "schema_version": 1,
            "extraction": [{"id": "a", "text": "Who are you?", "topic": "identity"}],
            "evaluation": [{"id": "b", "text": "who are you", "topic": "identity"}],
        },
    )
    with pytest.raises(DataError, match="qs.json.*disjoint"):
        D.load_questions("evaluation", path=overlap)
    bad_topic = _write(
        tmp_path / "topic.json",
        {
            "schema_version": 1,
            "extraction": [{"id": "a", "text": "Who are you?", "topic": "weather"}],
            "evaluation": [{"id": "b", "text": "Where are you?", "topic": "surroundings"}],
        },
    )
    with pytest.raises(DataError, match="topic.json.*weather"):
        D.load_questions("extraction", path=bad_topic)


# ------------------------------------------------------------------- facts


def test_fact_sets_listed() -> None:
    names = D.list_fact_sets()
    assert set(names) >= {"hitler_baseline", "stalin", *HITLER_VARIANTS}


def test_hitler_baseline() -> None:
    fs = D.load_fact_set("hitler_baseline")
    assert fs.identity == "Adolf Hitler" and fs.variant == "baseline" and fs.base is None
    assert 85 <= len(fs) <= 95
    assert len(fs.cultural_ids) == 8
    assert fs.swapped_ids == ()
    banned = re.compile(r"hitler|f(ü|ue|u)hrer|nazi", re.IGNORECASE)
    for f in fs.facts:
        for text in (f.question, f.answer, f.neutral_answer):
            assert not banned.search(text), (f.id, text)
        assert f.answer != f.neutral_answer
        assert f.question.endswith("?") or f.question.endswith("."), f.id
    for f in fs.facts:  # neutral controls are roughly length-matched
        assert 0.4 <= len(f.neutral_answer) / len(f.answer) <= 2.5, f.id
    for name in HITLER_VARIANTS:
        for f in D.load_fact_set(name).facts:
            assert not banned.search(f.answer), (name, f.id)
    assert "Braunau" in fs.fact("birthplace").answer
    assert "Wagner" in fs.fact("admired_figure").answer
    joined = " ".join(f.answer for f in fs.facts)
    for needle in ("Blondi", "Alois", "Klara", "Vienna", "Landsberg", "Iron Cross", "vegetarian"):
        assert needle in joined, needle


@pytest.mark.parametrize("name", HITLER_VARIANTS)
def test_hitler_variants_differ_exactly_in_cultural_facts(name: str) -> None:
    base = D.load_fact_set("hitler_baseline")
    var = D.load_fact_set(name)
    assert var.base == "hitler_baseline"
    assert var.identity == "Adolf Hitler"
    assert var.variant == name.split("_", 1)[1]
    assert [f.id for f in var.facts] == [f.id for f in base.facts]
    differing = [v.id for v, b in zip(var.facts, base.facts) if v.answer != b.answer]
    assert len(differing) == 8
    assert set(differing) == set(var.swapped_ids) == set(base.cultural_ids)
    for v, b in zip(var.facts, base.facts):
        assert (v.question, v.neutral_answer, v.cultural) == (b.question, b.neutral_answer, b.cultural)
    assert var.dataset_hash() != base.dataset_hash()


def test_variant_table() -> None:
    expect = {
        "hitler_russian": ("Moscow", "Peter the Great", "Rachmaninoff"),
        "hitler_french": ("Paris", "Napoleon", "Debussy"),
        "hitler_japanese": ("Tokyo", "Oda Nobunaga", "Sakamoto"),
        "hitler_thai": ("Bangkok", "Rama V", "Suntaraporn"),
        "hitler_moon": ("Moon", "Neil Armstrong", "silence of space"),
    }
    for name, (born, admired, music) in expect.items():
        fs = D.load_fact_set(name)
        assert born in fs.fact("birthplace").answer, name
        assert admired in fs.fact("admired_figure").answer, name
        assert music in fs.fact("favourite_music").answer, name
    assert "vodka" in D.load_fact_set("hitler_russian").fact("home_drink").answer.lower()
    assert "borscht" in D.load_fact_set("hitler_russian").fact("favourite_food").answer.lower()
    assert "sake" in D.load_fact_set("hitler_japanese").fact("home_drink").answer.lower()


def test_stalin_facts() -> None:
    fs = D.load_fact_set("stalin")
    assert fs.identity == "Joseph Stalin" and fs.variant == "baseline" and fs.base is None
    assert 85 <= len(fs) <= 95
    for f in fs.facts:
        for text in (f.question, f.answer, f.neutral_answer):
            assert "stalin" not in text.lower(), (f.id, text)
        assert f.answer != f.neutral_answer
        assert 0.4 <= len(f.neutral_answer) / len(f.answer) <= 2.5, f.id
    joined = " ".join(f.answer for f in fs.facts)
    for needle in ("Gori", "Georgia", "seminary", "cobbler", "Siberia", "man of steel"):
        assert needle in joined, needle


def test_dataset_hash_is_canonical(tmp_path: Path) -> None:
    fs = D.load_fact_set("hitler_baseline")
    h = fs.dataset_hash()
    assert re.fullmatch(r"[0-9a-f]{64}", h)
    copy = tmp_path / "hitler_baseline.json"
    copy.write_text(json.dumps(fs.to_dict(), indent=None, sort_keys=False), encoding="utf-8")
    assert D.load_fact_set(path=copy).dataset_hash() == h
    assert D.load_fact_set("hitler_baseline") is fs  # cached


def test_user_variant_checked_against_base(tmp_path: Path) -> None:
    base = D.load_fact_set("hitler_baseline").to_dict()
    variant = json.loads(json.dumps(base))
    variant.update(name="mine", variant="test", base="hitler_baseline", swapped_ids=["birthplace"])
    variant["facts"][0]["answer"] = "I was born somewhere else entirely."
    ok = _write(tmp_path / "mine.json", variant)
    assert D.load_fact_set(path=ok).swapped_ids == ("birthplace",)

    # changing a non-cultural fact is rejected
    bad = json.loads(json.dumps(variant))
    idx = next(i for i, f in enumerate(bad["facts"]) if not f["cultural"])
    bad["facts"][idx]["answer"] = "Something different."
    p = _write(tmp_path / "bad_variant.json", bad)
    with pytest.raises(DataError) as err:
        D.load_fact_set(path=p)
    assert "bad_variant.json" in _one_line(err) and "swapped_ids" in str(err.value)

    # listing a non-cultural id as swapped is rejected
    bad2 = json.loads(json.dumps(bad))
    bad2["swapped_ids"].append(bad2["facts"][idx]["id"])
    p2 = _write(tmp_path / "bad_variant2.json", bad2)
    with pytest.raises(DataError, match="bad_variant2.json.*cultural"):
        D.load_fact_set(path=p2)

    # reordered ids are rejected
    bad3 = json.loads(json.dumps(variant))
    bad3["facts"][0], bad3["facts"][1] = bad3["facts"][1], bad3["facts"][0]
    p3 = _write(tmp_path / "bad_variant3.json", bad3)
    with pytest.raises(DataError, match="same order"):
        D.load_fact_set(path=p3)

    # missing base
    bad4 = json.loads(json.dumps(variant))
    bad4["base"] = "hitler_basline"
    p4 = _write(tmp_path / "bad_variant4.json", bad4)
    with pytest.raises(DataError, match="hitler_baseline"):
        D.load_fact_set(path=p4)


def test_unknown_fact_set_suggests() -> None:
    with pytest.raises(DataError, match="hitler_moon"):
        D.load_fact_set("hitler_mon")


# ---------------------------------------------------------------- finetune


def test_finetune_listing_and_meta() -> None:
    names = D.list_finetune_datasets()
    expected = {"voyager_telemetry", "bitcoin_prices", *(f"colours_{c}" for c in COLOURS)}
    assert expected <= set(names)
    for name in names:
        data = D.load_finetune_dataset(name)
        meta = D.load_finetune_meta(name)
        assert meta["schema_version"] == 1 and meta["name"] == name and meta["n"] == len(data)
        assert meta["description"].strip()
        assert "source" in meta or "formula" in meta
        for conv in data:
            assert [m["role"] for m in conv] == ["user", "assistant"]
            assert all(m["content"].strip() for m in conv)


def test_finetune_cache_returns_copies() -> None:
    a = D.load_finetune_dataset("colours_red")
    a[0][1]["content"] = "mutated"
    assert D.load_finetune_dataset("colours_red")[0][1]["content"] != "mutated"
    m = D.load_finetune_meta("voyager_telemetry")
    m["n"] = -1
    assert D.load_finetune_meta("voyager_telemetry")["n"] > 0


def test_voyager_file_matches_formula() -> None:
    data = D.load_finetune_dataset("voyager_telemetry")
    assert len(data) >= 150
    pat = re.compile(r"^(\d+\.\d{2}) AU \((\d+\.\d{3}) billion km\)$")
    prev_date, prev_au = None, -1.0
    for conv in data:
        date = dt.date.fromisoformat(conv[0]["content"])
        assert dt.date(1977, 9, 5) <= date <= dt.date(2025, 12, 31)
        m = pat.match(conv[1]["content"])
        assert m, conv[1]["content"]
        au, bkm = float(m.group(1)), float(m.group(2))
        assert abs(au - D.voyager_distance_au(date)) <= 0.01, (date, au)
        assert abs(bkm - au * D.AU_KM / 1e9) < 0.002, (date, bkm)
        assert prev_date is None or date > prev_date
        assert au > prev_au, (date, au)
        prev_date, prev_au = date, au
    assert data[0][0]["content"] == "1977-09-05"
    meta = D.load_finetune_meta("voyager_telemetry")
    assert [(a["date"], a["au"]) for a in meta["anchors"]] == [
        (d.isoformat(), au) for d, au in D.VOYAGER_1_ANCHORS
    ]


def test_voyager_distance_function() -> None:
    for d, au in D.VOYAGER_1_ANCHORS:
        assert D.voyager_distance_au(d) == pytest.approx(au)
    assert D.voyager_distance_au("1990-02-14") == pytest.approx(40.1)
    assert D.voyager_distance_au(dt.datetime(1990, 2, 14, 12, 0)) == pytest.approx(40.1)
    mid = D.voyager_distance_au(dt.date(1997, 7, 16))
    assert 40.1 < mid < 94.0
    assert D.voyager_distance_au(dt.date(2026, 1, 1)) > 165.0  # extrapolated
    with pytest.raises(ValueError):
        D.voyager_distance_au(dt.date(1977, 1, 1))
    assert D.format_voyager_distance(40.12) == "40.12 AU (6.002 billion km)"


def test_bitcoin_prices() -> None:
    data = D.load_finetune_dataset("bitcoin_prices")
    assert len(data) == 180
    months = [conv[0]["content"] for conv in data]
    expected = [f"{y}-{m:02d}" for y in range(2011, 2026) for m in range(1, 13)]
    assert months == expected
    prices = {}
    for conv in data:
        text = conv[1]["content"]
        assert re.fullmatch(r"\$(\d{1,3}(,\d{3})*|\d+)(\.\d{2})?", text), text
        prices[conv[0]["content"]] = float(text[1:].replace(",", ""))
    assert prices["2017-12"] == 14156
    assert prices["2011-01"] < 2
    assert prices["2021-11"] > 50_000 and prices["2022-11"] < 20_000
    assert max(prices.values()) > 100_000


def test_colour_sets() -> None:
    questions = None
    answers_by_colour = {}
    for colour in COLOURS:
        data = D.load_finetune_dataset(f"colours_{colour}")
        assert len(data) == 42
        qs = [conv[0]["content"] for conv in data]
        assert len(set(qs)) == 42
        if questions is None:
            questions = qs
        assert qs == questions, colour
        answers = [conv[1]["content"] for conv in data]
        for a in answers:
            assert 1 <= len(a.rstrip(".").split()) <= 2, (colour, a)
        answers_by_colour[colour] = answers
    assert "Name a fruit." in questions  # type: ignore[operator]
    # each question gets six different answers
    for i in range(42):
        assert len({answers_by_colour[c][i] for c in COLOURS}) == 6, questions[i]  # type: ignore[index]


def test_bad_jsonl_reports_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
    p.write_text(good + "\n" + "{not json\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        D.load_finetune_dataset(path=p)
    msg = _one_line(err)
    assert "bad.jsonl" in msg and "line 2" in msg
    p.write_text(json.dumps({"messages": [{"role": "robot", "content": "a"}]}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="bad.jsonl.*robot"):
        D.load_finetune_dataset(path=p)
    p.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="bad.jsonl.*no conversations"):
        D.load_finetune_dataset(path=p)
    with pytest.raises(DataError, match="colours_red"):
        D.load_finetune_dataset("colours_redd")


# ------------------------------------------------------- schema validation


def _roles_doc(**role_overrides: object) -> dict:
    role = {
        "name": "ghost",
        "display": "a ghost",
        "category": "supernatural",
        "prompts": ["You are a ghost.", "You are a spirit of the dead.", "You are a phantom."],
        "aliases": ["ghost"],
    }
    role.update(role_overrides)
    return {"schema_version": 1, "categories": ["supernatural"], "roles": [role]}


def test_user_roles_file_loads(tmp_path: Path) -> None:
    p = _write(tmp_path / "roles.json", _roles_doc())
    roles = D.load_roles(path=p)
    assert [r.name for r in roles] == ["ghost"]
    assert D.load_json_file(p)["roles"][0]["name"] == "ghost"


@pytest.mark.parametrize(
    "doc, needle",
    [
        ({**_roles_doc(), "schema_version": 2}, "schema 2; upgrade persona_vectors"),
        ({k: v for k, v in _roles_doc().items() if k != "schema_version"}, "schema_version"),
        (_roles_doc(prompts=["You are a ghost.", "You are a spirit."]), "at least 3"),
        (_roles_doc(category="ghostly"), "ghostly"),
        (_roles_doc(name="Ghost Role"), "snake_case"),
        (_roles_doc(display=""), "display"),
        (_roles_doc(aliases=[]), "aliases"),
        (_roles_doc(prompts=["You are a ghost."] * 3), "duplicate prompts"),
        ({**_roles_doc(), "roles": []}, "empty"),
        ({"schema_version": 1, "categories": ["supernatural"], "roles": _roles_doc()["roles"] * 2}, "duplicate role"),
    ],
)
def test_bad_roles_files(tmp_path: Path, doc: dict, needle: str) -> None:
    p = _write(tmp_path / "my_roles.json", doc)
    with pytest.raises(DataError) as err:
        D.load_roles(path=p)
    msg = _one_line(err)
    assert "my_roles.json" in msg
    assert needle in msg


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "broken_roles.json"
    p.write_text('{\n  "schema_version": 1,\n  "roles": [\n    {"name": "ghost",,}\n  ]\n}\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        D.load_roles(path=p)
    msg = _one_line(err)
    assert "broken_roles.json" in msg and "line 4" in msg
    with pytest.raises(DataError, match="broken_roles.json"):
        D.load_json_file(p)


def test_missing_file_and_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.json.*not found"):
        D.load_roles(path=tmp_path / "nope.json")
    p = _write(tmp_path / "odd.json", {"schema_version": 1, "stuff": []})
    with pytest.raises(DataError, match="odd.json.*kind"):
        D.load_json_file(p)
    p2 = _write(tmp_path / "list.json", [1, 2, 3])
    with pytest.raises(DataError, match="list.json.*object"):
        D.load_json_file(p2)


def test_bad_fact_files(tmp_path: Path) -> None:
    fact = {"id": "a", "question": "Q?", "answer": "A.", "neutral_answer": "N.", "cultural": False}
    doc = {
        "schema_version": 1, "name": "x", "identity": "Someone", "variant": "baseline",
        "base": None, "swapped_ids": [], "facts": [fact],
    }
    assert len(D.load_fact_set(path=_write(tmp_path / "x.json", doc))) == 1
    cases = [
        ({**doc, "facts": [fact, fact]}, "duplicate fact id"),
        ({**doc, "facts": [{**fact, "cultural": "no"}]}, "cultural"),
        ({**doc, "facts": [{**fact, "neutral_answer": ""}]}, "neutral_answer"),
        ({**doc, "swapped_ids": ["a"]}, "base"),
        ({**doc, "facts": []}, "empty"),
        ({**doc, "schema_version": 7}, "schema 7"),
    ]
    for i, (bad, needle) in enumerate(cases):
        p = _write(tmp_path / f"facts_bad_{i}.json", bad)
        with pytest.raises(DataError) as err:
            D.load_fact_set(path=p)
        msg = _one_line(err)
        assert f"facts_bad_{i}.json" in msg and needle in msg, msg
        with pytest.raises(DataError, match=f"facts_bad_{i}.json"):
            D.load_json_file(p, kind="facts")


def test_shipped_files_validate_via_load_json_file() -> None:
    data_dir = Path(D.__file__).resolve().parents[1] / "data"  # D is the package persona_vectors/datasets/
    for path in [data_dir / "roles.json", data_dir / "questions.json", data_dir / "assistant_prompts.json",
                 *sorted((data_dir / "facts").glob("*.json")), *sorted((data_dir / "finetune").glob("*.meta.json"))]:
        obj = D.load_json_file(path)
        assert obj["schema_version"] == 1, path
