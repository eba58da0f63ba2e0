"""Reports: suite validation, reuse of finished runs, a smoke study."""

import json
import re

import pytest

from graphnet import report as rp
from graphnet.errors import SpecError

from conftest import SPECS
from test_sweep import fake  # noqa: F401  (fixture)

SUITE = SPECS / "a3" / "suite.json"
SECTION_TITLES = ["Gradient checks", "3-layer net with and without batch norm",
                  "9-layer net with and without batch norm",
                  "Coarse-to-fine search for lambda",
                  "Sensitivity to initialization"]


def small_suite(tmp_path, samples=2, extra_sections=()):
    """The a3 suite with fewer samples, smaller checked nets, inline sweeps."""
    suite = json.loads(SUITE.read_text())
    for name, path in suite["sweeps"].items():
        sweep = json.loads((SPECS / "a3" / path).read_text())
        sweep["base"] = str(SPECS / "a3" / sweep["base"])
        sweep["samples"] = samples
        suite["sweeps"][name] = sweep
    for run in suite["runs"].values():
        run["spec"] = str(SPECS / "a3" / run["spec"])
    grad = suite["sections"][0]
    for net in grad["nets"]:
        net["spec"] = str(SPECS / "a3" / net["spec"])
        hidden = [4] * (1 + int(net["label"][0]) - 2)
        net["set"] = {**net.get("set", {}), "graph.mlp.hidden": hidden}
    grad["dims"] = 4
    suite["sections"] += list(extra_sections)
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(suite))
    return path


def test_the_study_suite_validates():
    suite = rp.load_suite(SUITE)
    assert [s.cfg["title"] for s in suite["sections"]] == SECTION_TITLES
    assert set(suite["sweeps"]) == {"lambda", "sensitivity"}
    lam = suite["sweeps"]["lambda"]["sweep"]
    assert lam["search"] == {"loss.l2": {"log_uniform": [1e-5, 1e-1]}}
    assert rp.run_spec(suite, "3layer-bn-best")["train"]["schedule"][
        "cycles"] == 3


@pytest.mark.parametrize("edit, match", [
    (lambda s: s["sections"].append({"type": "tabel"}),
     r"sections\[5\].type: unknown section type 'tabel'; did you mean "
     r"'table'"),
    (lambda s: s["sections"][1].update(runs=["3layr"]),
     r"sections\[1\].runs\[0\]: unknown run '3layr'; did you mean '3layer'"),
    (lambda s: s["runs"]["3layer-bn-best"].update(best_of="lamda"),
     r"runs.3layer-bn-best.best_of: unknown sweep 'lamda'; did you mean "
     r"'lambda'"),
    (lambda s: s["sections"][4].update(vary="graph.mlp.inits"),
     r"sections\[4\].vary: unknown searched key 'graph.mlp.inits'"),
    (lambda s: s["runs"]["3layer"].update(set={"loss.l2": -1}),
     r"runs.3layer: loss.l2: expected a number >= 0, found -1"),
    (lambda s: s.update(sections=[]),
     r"sections: expected at least 1 item"),
    (lambda s: s["sweeps"].update(lambda_={"base": "3layer.json",
                                           "search": {}}),
     r"sweeps.lambda_: search: expected at least 1 entry"),
])
def test_suite_errors_name_the_key(tmp_path, edit, match):
    suite = json.loads(small_suite(tmp_path).read_text())
    edit(suite)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(suite))
    with pytest.raises(SpecError, match=match):
        rp.load_suite(path)


def test_report_reuses_every_run(tmp_path, fake):  # noqa: F811
    extensions = {"type": "table", "title": "Extensions",
                  "runs": ["3layer", "9layer-bn"], "curves": 1}
    suite = small_suite(tmp_path, extra_sections=[extensions])
    out = tmp_path / "rep"
    first = rp.make_report(suite, out, workers=1)
    assert first["trained"] == 5 + 2 * 2 + 6 == len(fake)  # runs, sweeps
    md = (out / "report.md").read_text()
    for title in SECTION_TITLES + ["Extensions"]:
        assert re.search(rf"^## \d\. {re.escape(title)}$", md, re.M), title
    # every figure the markdown shows exists
    for name in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert (out / name).is_file(), name
    # every run folder named in a table exists
    for folder in re.findall(r"`((?:runs|sweeps)/[^`]+-\d{8}-\d{6}[^`]*)`",
                             md):
        assert (out / folder / "summary.json").is_file(), folder
    # the search section says which lambda was best and uses it
    best = first["sweeps"]["lambda"]["best"]["values"]["loss.l2"]
    spec = json.loads((out / first["runs"]["3layer-bn-best"]["run_dir"] /
                       "spec.json").read_text())
    assert spec["loss"]["l2"] == best
    assert spec["train"]["schedule"]["cycles"] == 3
    with rp.Runner(1) as runner:       # the runs again, without drawing
        second = rp.Study(rp.load_suite(suite), out, runner).run()
    assert second.trained == 0 and len(fake) == 15
    assert second.reused == 15
    assert second.runs["3layer"]["run_dir"] == first["runs"]["3layer"][
        "run_dir"]
    # another --set gets its own sweep folders rather than a refusal
    sweep = rp.load_suite(suite)["sweeps"]["lambda"]["sweep"]
    other = rp.load_suite(suite, ["train.steps=3"])["sweeps"]["lambda"]
    assert rp.digest(sweep) != rp.digest(other["sweep"])


def test_smoke_report_on_real_data(tmp_path, real_data):
    pypdf = pytest.importorskip("pypdf")
    suite = small_suite(tmp_path)
    out = tmp_path / "rep"
    result = rp.make_report(
        suite, out, data_dir=real_data, workers=2,
        overrides=["data.train=500", "data.val=100", "train.steps=20",
                   "train.eval_every=10"])
    assert result["trained"] == 15
    md = (out / "report.md").read_text()
    for title in SECTION_TITLES:
        assert f"{title}\n" in md
    assert "**Finding.**" in md and "Best: **loss.l2 = " in md
    worst = re.search(r"Worst relative error over all \d+ parameters of 6 "
                      r"nets .*: \*\*(\S+)\*\*", md)
    assert float(worst.group(1)) < 1e-6
    pdf = (out / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    reader = pypdf.PdfReader(out / "report.pdf")
    text = "\n".join(page.extract_text() for page in reader.pages)
    for i, title in enumerate(SECTION_TITLES, start=1):
        assert f"{i}. {title}" in text
    assert "scores.W" in text and "|---" not in text


def test_pdf_is_typeset_from_the_markdown(tmp_path):
    pypdf = pytest.importorskip("pypdf")
    from graphnet.plots import plt
    rows = [[f"net{i}", f"{i / 7:.4f}", f"runs/net{i}-20261203-150540"]
            for i in range(120)]    # more rows than a page holds
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([0, 1], [1, 0])
    blocks = [("md", "# A report\n\nSome **bold** words."),
              ("md", "## 1. Tables"),
              ("md", rp.table(["net", "value", "run folder"], rows)),
              ("md", "## 2. Figures"),
              ("fig", "line.png", fig, "A falling line.")]
    rp.write_report(blocks, tmp_path)
    reader = pypdf.PdfReader(tmp_path / "report.pdf")
    texts = [page.extract_text() for page in reader.pages]
    text = "\n".join(texts)
    assert len(texts) >= 3
    for heading in ["A report", "1. Tables", "2. Figures", "A falling line."]:
        assert heading in text
    assert "Some bold words." in text and "**" not in text
    assert "0.4286" in text and "net119" in text
    assert texts[-1].count("run folder") == 1    # header repeated per page
    assert not any("|---" in line for line in text.splitlines())
    assert "|" not in text
    assert texts[1].strip().endswith("2")        # page number in the footer
    assert (tmp_path / "figures" / "line.png").is_file()
