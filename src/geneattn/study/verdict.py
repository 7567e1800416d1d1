"""The verdict at the top of the report: four questions answered in plain words, numbers and intervals.

1. Did the model learn, against its baselines? (test accuracy, interval over test wells)
2. Did attention change beyond what fine-tuning on permuted labels does? (run-level null; gated on 1)
3. Which heads matter causally? (head ablation, interval over test wells)
4. Does attention find the planted genes beyond gene-level covariates (splines; programme blocks as units),
   and does fine-tuning on the real labels add to it? (run-level contrast, Welch interval over runs)

The wording follows the numbers: a model whose interval includes the majority baseline "did not
learn", and then nothing specific to the fine-tuned model is claimed.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["verdict"]

_ATTENTION = "attention_fold"


def _num(x: object, digits: int = 3) -> str:
    return "n/a" if x is None else f"{float(x):.{digits}g}" if abs(float(x)) < 1 else f"{float(x):.3g}"


def _pct(x: object) -> str:
    return "n/a" if x is None else f"{100 * float(x):.1f}%"


def _ci(ci: object, fmt: object = _pct) -> str:
    return "" if not ci else f" [{fmt(ci[0])}, {fmt(ci[1])}]"


def _unit_word(grouped_by: str | None) -> str:
    """What the test units are: wells (or replicates), or cells when the split is not grouped."""
    return f"test {grouped_by}s" if grouped_by else "test cells (the units: no wells)"


def _learned(m: Mapping) -> dict:
    clf = m.get("classification") or {}
    flags = clf.get("flags") or {}
    base = clf.get("baselines") or {}
    maj, lr, ln = (base.get(k, {}) for k in ("majority", "logreg", "length"))
    learned = bool(flags.get("learned"))
    acc = (f"test accuracy {_pct(clf.get('accuracy'))}{_ci(clf.get('accuracy_ci'))} over {len(clf.get('classes') or [])} "
           f"classes, {clf.get('n_test_units', '?')} {_unit_word(clf.get('split_grouped_by'))} "
           f"(majority class {_pct(maj.get('accuracy'))}, "
           f"logistic regression on the tokens {_pct(lr.get('accuracy'))}{_ci(lr.get('accuracy_ci'))}, "
           f"genes expressed alone {_pct(ln.get('accuracy'))})")  # fmt: skip
    groups = clf.get("groups") or {}
    if groups.get("accuracy") is not None:
        gmaj = (maj.get("groups") or {}).get("accuracy")
        acc += f"; groups {_pct(groups['accuracy'])}{_ci(groups.get('accuracy_ci'))} (majority {_pct(gmaj)})"
    text = (
        ("The classifier learned the task: " if learned else "The classifier did not learn the task: ")
        + acc
        + "."
    )
    if learned and flags.get("beats_logreg") is False:
        text += " It is not better than logistic regression on the same tokens."
    if flags.get("best_epoch_zero"):
        text += " The kept checkpoint is epoch 0 (validation did not improve after the first epoch)."
    return {"learned": learned, "beats_logreg": flags.get("beats_logreg"), "text": text}


def _task(m: Mapping, *, learned: bool) -> dict:
    null = (m.get("task_attributable") or {}).get("permuted_label_runs") or {}
    if "families" not in null:
        return {"tested": False, "text": "The run-level null was not run (no permuted-label fine-tunes)."}
    fam = null["families"]
    parts = [f"{c['n_significant' if learned else 'n_significant_ungated']} of {c['n_tests']} {name.replace('_', ' ')}"
             for name, c in fam.items()]  # fmt: skip
    runs = next(iter(fam.values()), {})
    design = f"{runs.get('n_runs_real', '?')} real-label vs {runs.get('n_runs_permuted', '?')} permuted-label fine-tunes"
    if not learned:
        text = (f"Not attributable to the task: the model did not learn, so no attention change is claimed "
                f"(0 task-attributable discoveries; without that gate {', '.join(parts)} at FDR 0.05; {design}).")  # fmt: skip
        return {"tested": False, "n_discoveries": 0, "text": text}
    n = sum(c["n_significant"] for c in fam.values())
    head = "Attention changed beyond what fine-tuning on permuted labels does" if n else (
        "Attention did not change beyond what fine-tuning on permuted labels does")  # fmt: skip
    return {"tested": True, "n_discoveries": n, "text": f"{head}: {', '.join(parts)} at FDR 0.05 ({design})."}


def _combo_text(c: Mapping) -> str:
    txt = (f"; the {c['n_heads']} heads whose change differed most from the permuted-label runs, ablated together "
           f"(a combination, not one head: {c.get('ablation')}): {_num(c['d_accuracy'])}"
           f"{_ci([c['d_accuracy_low'], c['d_accuracy_high']], _num)}")  # fmt: skip
    if c.get("n_random"):
        txt += (f", against {_num(c.get('random_mean_d_accuracy'))} on average for {c['n_random']} random sets of "
                f"{c['n_heads']} heads ({c.get('random_as_large')} of them dropped as much)")  # fmt: skip
    return txt


def _heads(m: Mapping, *, learned: bool) -> dict:
    h = m.get("heads") or {}
    if not h:
        return {"text": "Head ablation was not run."}
    d = (h.get("largest_drops") or [{}])[0]
    units = (f"{h.get('n_wells')} test wells as units" if h.get("n_wells") != h.get("n_cells")
             else "each cell its own unit: no wells")  # fmt: skip
    txt = (f"Ablating a single head changed test accuracy by at most {_num(d.get('d_accuracy'))}"
           f"{_ci([d.get('d_accuracy_low'), d.get('d_accuracy_high')], _num) if d else ''} ({d.get('ablation', '-')}; "
           f"{h.get('n_single', '?')} single heads tested, {h.get('n_cells')} test cells, {units})")  # fmt: skip
    for c in h.get("combos") or []:
        txt += _combo_text(c)
    causal = h.get("causal") or []
    adjusted = str(h.get("causal_rule", "")).startswith("Holm")
    if causal:
        txt += (f". Single heads whose ablation lowers accuracy or log-likelihood "
                f"{'after Holm adjustment over the heads tested' if adjusted else '(interval below 0, not adjusted)'}: "
                f"{', '.join(causal[:6])}.")  # fmt: skip
    else:
        txt += (". No single head lowers accuracy or log-likelihood "
                + ("after Holm adjustment over the heads tested." if adjusted else "beyond its interval."))  # fmt: skip
    if not learned:
        txt += " (The model did not learn: these heads matter for its predictions, not for a learned task.)"
    return {"causal": causal, "text": txt}


_CONTROLS = ("detection", "variance", "mean_rank")


def _p(x: object) -> str:
    return "n/a" if x is None else f"{float(x):.2g}"


def _run_level(run: Mapping) -> tuple[str, str]:
    """``(call, sentence)`` of the run-level contrast: "adds", "less" or "undetermined"."""
    n_r, n_p = run.get("n_real", 0), run.get("n_permuted", 0)
    lo, hi = run.get("ci_low"), run.get("ci_high")
    if lo is None or hi is None:
        return "undetermined", (f"Undetermined whether fine-tuning on the dose labels adds to this: the run-level "
                                f"contrast needs at least 2 real-label and 2 permuted-label runs ({n_r} + {n_p}).")  # fmt: skip
    what = ("placement of the background responders among their own decoys" if run.get("value", "placement") == "placement"
            else "spline-adjusted coefficient on the background responders")  # fmt: skip
    est = (f"{what}, real-label minus permuted-label runs, {_num(run.get('effect'))}{_ci([lo, hi], _num)} "
           f"(Welch, {n_r} + {n_p} training runs)")  # fmt: skip
    if lo > 0:
        return "adds", f"Fine-tuning on the dose labels adds to it: {est}."
    if hi < 0:
        return "less", f"Fine-tuning on the dose labels makes it weaker: {est}."
    return (
        "undetermined",
        f"Undetermined whether fine-tuning on the dose labels adds to it: {est} includes 0.",
    )


def _truth(m: Mapping) -> dict:
    """Recovery of the planted genes: spline-adjusted test with its units, and the run-level call.

    Only deterministic numbers enter the text (no bootstrap interval): it is the same for every seed.
    """
    inc = m.get("incremental") or {}
    methods = inc.get("methods") or {}
    att, det = methods.get(_ATTENTION), methods.get("detection")
    if not att:
        return {"text": "No ground truth (planted genes) in these data: recovery is not assessed."}
    unit = "programme blocks and matched sets" if att.get("unit") == "programme block" else "genes"
    ctrl = ", ".join(
        f"{c.replace('_', ' ')} p {_p(methods[c].get('pvalue'))}" for c in _CONTROLS if c in methods
    )
    txt = (f"Attention (fold over uniform) finds the planted genes with AUROC {_num(att.get('auroc'))} (detection rate "
           f"alone {_num((det or {}).get('auroc'))}); over natural splines of mean, detection, variance and dispersion, "
           f"with {unit} as units, p {_p(att.get('pvalue'))}" + (f" (negative controls: {ctrl})" if ctrl else "") + ". ")  # fmt: skip
    run = inc.get("run_level")
    call, sentence = _run_level(run or {})
    if run is None:
        sentence = "Undetermined whether fine-tuning on the dose labels adds to it: no run-level contrast (no control runs)."
    return {"adds_beyond_covariates": call == "adds", "call": call, "text": txt + sentence}


def verdict(m: Mapping) -> dict:
    """The four answers and a one-line headline, from the (JSON) metrics."""
    learned = _learned(m)
    out = {"learned": learned, "task_change": _task(m, learned=learned["learned"]), "heads": _heads(m, learned=learned["learned"]),
           "truth": _truth(m)}  # fmt: skip
    head = "model learned" if learned["learned"] else "model did not learn"
    if out["task_change"].get("tested"):
        head += f"; {out['task_change']['n_discoveries']} task-attributable changes"
    if "call" in out["truth"]:
        head += {"adds": "; the dose labels add to planted-gene recovery",
                 "less": "; the dose labels weaken planted-gene recovery"}.get(
            out["truth"]["call"], "; task-specific recovery undetermined")  # fmt: skip
    out["headline"] = head
    return out
