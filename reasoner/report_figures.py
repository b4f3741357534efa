"""The report's figures (``reasoner.report``), each a pure function of saved rows to PNG bytes.

Shapes of Zhang et al. 2024: greedy accuracy per model, mode and source as grouped bars (Tables
2 and 6); accuracy against N with bootstrap bands (Figures 6-7); one question's candidates as
token boxes coloured by centred token reward (Figure 8), or, with no per-token rewards saved, a
bar chart of their sequence rewards; training curves per step. matplotlib is imported inside the
functions and used through a bare ``Figure`` (no pyplot, no backend switch, no global state).
"""

from __future__ import annotations

import io
import math
from collections import defaultdict

LABELS = {"models/base": "base", "models/sft": "SFT", "models/dpo": "DPO"}
MODES = {"direct": "direct", "cot": "CoT"}
STRATEGIES = {"single": "single sample", "majority": "majority vote", "best_of_n": "best-of-N (DPO reward)",
              "weighted_vote": "weighted vote (DPO reward)", "control": "best-of-N (SFT likelihood)",
              "oracle": "oracle (any correct)"}
COLORS = {"models/base": "tab:gray", "models/sft": "tab:blue", "models/dpo": "tab:orange"}
TRAINING_PANELS = (("SFT", "loss", "SFT loss"), ("DPO", "loss", "DPO loss"),
                   ("DPO", "rewards/margins", "DPO reward margin (chosen - rejected)"),
                   ("DPO", "rewards/accuracies", "DPO chosen-over-rejected accuracy"))
WRAP = 100  # characters a line of token boxes


def label(model: str) -> str:
    """``models/sft`` -> ``SFT``; another artifact, its last part."""
    return LABELS.get(model, model.removeprefix("models/"))


def columns(rows: list[dict]) -> list[tuple[str, str]]:
    """The (model, mode) pairs of accuracy rows: base, SFT, DPO, then others; direct before CoT."""
    order = list(LABELS)
    return sorted({(r["model"], r["mode"]) for r in rows},
                  key=lambda c: (order.index(c[0]) if c[0] in order else len(order), c[0], c[1] != "direct", c[1]))


def sources(rows: list[dict]) -> list[str]:
    """The sources of accuracy rows, sorted, then ``overall``."""
    return sorted({r["source"] for r in rows} - {"overall"}) + ["overall"]


def strategies(rows: list[dict]) -> list[str]:
    """The strategies of curve rows in the order of :data:`STRATEGIES` (unknown ones last)."""
    present = {r["strategy"] for r in rows}
    return [s for s in STRATEGIES if s in present] + sorted(present - set(STRATEGIES))


def answer_text(row: dict) -> str:
    return "(none)" if row.get("answer") in (None, "") else repr(row["answer"])


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, metadata={"Software": None})
    return buf.getvalue()


def plot_accuracy(rows: list[dict], split: str) -> bytes:
    """Grouped bars: a group a source (and overall), a bar a model (colour) and mode (hatched: direct)."""
    pairs, groups = columns(rows), sources(rows)
    value = {(r["model"], r["mode"], r["source"]): r["accuracy"] for r in rows}
    fig = _figure(max(7.0, 0.4 * len(groups) * len(pairs)), 4.2)
    ax, width = fig.add_subplot(), 0.8 / max(1, len(pairs))
    for j, (model, mode) in enumerate(pairs):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(groups))]
        direct = mode == "direct"
        ax.bar(xs, [value.get((model, mode, s), math.nan) for s in groups], width, color=COLORS.get(model, f"C{j}"),
               alpha=0.55 if direct else 1.0, hatch="//" if direct else None, edgecolor="white",
               label=f"{label(model)} {MODES.get(mode, mode)}")
    ax.set_xticks(range(len(groups)), groups)
    top = max((v for v in value.values() if not math.isnan(v)), default=0.0)
    ax.set(ylim=(0, min(1.0, max(0.05, top * 1.15))), ylabel="greedy accuracy",
           title=f"Greedy accuracy per model and mode on the {split} split (Table 2 shape)")
    ax.legend(ncols=min(6, len(pairs)), loc="upper left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_reranking(rows: list[dict], generator: str, verifier: str | None) -> bytes:
    """Accuracy against N (log2) a strategy, the bootstrap interval as a band (Figures 6-7 shape)."""
    fig = _figure(7.5, 4.5)
    ax = fig.add_subplot()
    for i, strategy in enumerate(strategies(rows)):
        pts = sorted((r for r in rows if r["strategy"] == strategy), key=lambda r: r["n"])
        ns, color, oracle = [r["n"] for r in pts], f"C{i}", strategy == "oracle"
        ax.plot(ns, [r["accuracy"] for r in pts], marker="o", ms=4, color="0.4" if oracle else color,
                linestyle="--" if oracle else "-", label=STRATEGIES.get(strategy, strategy))
        ax.fill_between(ns, [r["low"] for r in pts], [r["high"] for r in pts], color="0.4" if oracle else color,
                        alpha=0.15, lw=0)
    ns = sorted({r["n"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.minorticks_off()
    by = f"verifier {verifier}" if verifier else "no verifier"
    ax.set(xlabel="N, candidates reranked (log scale)", ylabel="accuracy",
           title=f"Reranking N candidates of {generator}, {by} (95% bootstrap bands)")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return _png(fig)


def pick_question(pool: list[dict]) -> tuple[str, list[dict]] | None:
    """The first question (by id) with both right and wrong candidates, else the first; its rows."""
    by_question: dict[str, list[dict]] = defaultdict(list)
    for row in pool:
        by_question[row["id"]].append(row)
    if not by_question:
        return None
    mixed = [i for i in sorted(by_question) if len({bool(r["correct"]) for r in by_question[i]}) == 2]
    qid = (mixed or sorted(by_question))[0]
    return qid, sorted(by_question[qid], key=lambda r: r["sample_index"])


def shown_candidates(rows: list[dict], k: int = 4) -> list[dict]:
    """Up to ``k`` candidates, half right and half wrong where the pool allows, highest reward first."""
    ranked = sorted(rows, key=lambda r: -r["reward"])
    right, wrong = [r for r in ranked if r["correct"]], [r for r in ranked if not r["correct"]]
    take = min(len(right), max(k // 2, k - len(wrong)))
    return sorted(right[:take] + wrong[:k - take], key=lambda r: -r["reward"])


def plot_token_credit(qid: str, rows: list[dict]) -> bytes:
    """Figure 8: each candidate a block of token boxes coloured by its centred token reward (0 white).
    Rows carry ``tokens`` (strings) and ``token_rewards`` (raw, ``reasoner.verify.token_rewards``)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    from reasoner.verify import centred

    values = [centred(r["token_rewards"]) for r in rows]
    scale = max((abs(v) for vs in values for v in vs), default=0.0) or 1.0
    norm, cmap = Normalize(-scale, scale), colormaps["RdBu"]
    boxes, line = [], 0  # (line, x, width, text, value); a candidate's header line has value None
    for row, vs in zip(rows, values, strict=True):
        head = (f"#{row['sample_index']} {'right' if row['correct'] else 'wrong'}, answer {answer_text(row)}, "
                f"reward {row['reward']:+.3f}")
        boxes.append((line, 0.0, 0.0, head, None))
        line, x = line + 1, 0.0
        for token, v in zip(row["tokens"], vs, strict=True):
            token = token.replace("\n", "\u21b5")
            w = max(1, len(token)) + 0.6
            if x + w > WRAP and x > 0:
                line, x = line + 1, 0.0
            boxes.append((line, x, w, token, v))
            x += w + 0.2
        line += 2
    fig = _figure(11, 0.8 + 0.28 * line)
    ax = fig.add_subplot(xlim=(0, WRAP), ylim=(line, -0.5))
    ax.axis("off")
    for y, x, w, text, v in boxes:
        if v is None:
            ax.text(x, y + 0.5, text, va="center", fontsize=9, weight="bold")
            continue
        ax.add_patch(Rectangle((x, y + 0.1), w, 0.8, facecolor=cmap(norm(v)), edgecolor="0.8", lw=0.4))
        ax.text(x + w / 2, y + 0.5, text, ha="center", va="center", fontsize=8, family="monospace",
                color="white" if abs(v) > 0.6 * scale else "black")
    fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label="centred token reward", shrink=0.8)
    ax.set_title(f"Token credit assignment of the DPO verifier on {qid} (Figure 8 shape)")
    return _png(fig)


def plot_sequence_rewards(qid: str, rows: list[dict]) -> bytes:
    """Figure 8's fallback: every candidate's sequence reward, right ones green, wrong ones red."""
    from matplotlib.patches import Patch

    ranked = sorted(rows, key=lambda r: -r["reward"])
    fig = _figure(8, 1.4 + 0.24 * len(ranked))
    ax = fig.add_subplot()
    ax.barh(range(len(ranked)), [r["reward"] for r in ranked],
            color=["tab:green" if r["correct"] else "tab:red" for r in ranked])
    ax.set_yticks(range(len(ranked)), [f"#{r['sample_index']}  {answer_text(r)[:24]}" for r in ranked], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set(xlabel="sequence reward, beta * (log p_DPO - log p_SFT) summed over tokens",
           title=f"Sequence rewards of the candidates of {qid}\n(per-token rewards are not saved: no token colouring)")
    ax.legend(handles=[Patch(color="tab:green", label="right"), Patch(color="tab:red", label="wrong")], fontsize=8)
    return _png(fig)


def plot_training(metrics: dict[str, list[dict]]) -> bytes | None:
    """A panel per curve of :data:`TRAINING_PANELS` the metrics hold (``{"SFT": records, "DPO": ...}``);
    None if they hold none."""
    panels = []
    for model, key, title in TRAINING_PANELS:
        pts = [(r["step"], r[key]) for r in metrics.get(model, []) if isinstance(r.get(key), int | float)]
        if pts:
            panels.append((title, key, pts))
    if not panels:
        return None
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = _figure(5 * cols, 3.2 * rows)
    for i, (title, key, pts) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None)
        if key == "rewards/accuracies":
            ax.axhline(0.5, color="0.5", lw=0.8, linestyle=":")
        ax.set(title=title, xlabel="step", ylabel=key)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    return _png(fig)
