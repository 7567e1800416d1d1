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
        text += " It is not shown to be better than logistic regression on the same tokens."
    text += _ensemble_text(m)
    if flags.get("best_epoch_zero"):
        text += " The kept checkpoint is epoch 0 (validation did not improve after the first epoch)."
    return {"learned": learned, "beats_logreg": flags.get("beats_logreg"), "text": text}


def _null_runs(m: Mapping) -> str:
    """How the permuted-label runs score against the TRUE labels (they must sit at chance)."""
    runs = ((m.get("ensemble") or {}).get("runs")) or {}
    null = {n: r for n, r in runs.items() if r.get("kind") == "permuted"}
    key = "group_accuracy" if any("group_accuracy" in r for r in null.values()) else "accuracy"
    vals = [r[key] for r in null.values() if r.get(key) is not None]
    if not vals:
        return ""
    what = "low vs high" if key == "group_accuracy" else "accuracy"
    txt = f"; null runs against the true labels: {what} {_pct(min(vals))} to {_pct(max(vals))}"
    if key == "group_accuracy" and any(abs(v - 0.5) > 0.1 for v in vals):
        txt += " (outside 50% ± 10 points: a null run carries label information)"
    return txt


def _contrast_text(name: str, c: Mapping) -> str:
    eff = c.get("effect")
    txt = f"{name} {_num(eff)}{_ci([c.get('ci_low'), c.get('ci_high')], _num)}: {c.get('decision', 'n/a')}"
    if c.get("decision") == "undetermined" and c.get("mde") is not None:
        txt += f" (margin ±{_num(c.get('margin'))}, detectable {_num(c.get('mde'))})"
    return txt


def _ensemble_text(m: Mapping) -> str:
    """The real-label runs' mean accuracy with run-level intervals, within groups, and minus logreg."""
    ens = m.get("ensemble") or {}
    real = ens.get("real") or {}
    acc = real.get("accuracy") or {}
    if acc.get("n_runs", 0) < 2:
        return ""

    def iv(d: Mapping) -> str:
        return f"{_pct(d.get('mean'))}{_ci([d.get('ci_low'), d.get('ci_high')])}"

    parts = [f"accuracy {iv(acc)}"]
    if "group_accuracy" in real:
        parts.append(f"groups {iv(real['group_accuracy'])}")
    chance = []
    for key, d in real.items():
        if key.startswith("within_"):
            g = key[len("within_") : -len("_accuracy")]
            parts.append(f"within {g} {iv(d)}")
            if d.get("ci_low") is not None and d["ci_low"] <= 0.5:
                chance.append(g)
    diff = (ens.get("real_minus_logreg") or {}).get("accuracy")
    if diff:
        parts.append(
            f"minus logistic regression {_num(diff.get('mean'))}{_ci([diff.get('ci_low'), diff.get('ci_high')], _num)}"
        )
    txt = f" Over {acc['n_runs']} real-label runs (intervals over runs): {', '.join(parts)}."
    failed = ens.get("failed_runs") or []
    if failed:
        txt += f" {len(failed)} real-label run(s) did not learn and are left out: {', '.join(failed)}."
    if chance:
        txt += f" Within {', '.join(chance)} the classes are not told apart beyond chance (interval reaches 50%)."
    return txt


def _task(m: Mapping, *, learned: bool) -> dict:
    null = (m.get("task_attributable") or {}).get("permuted_label_runs") or {}
    if "families" not in null:
        return {"tested": False, "text": "The run-level null was not run (no permuted-label fine-tunes)."}
    fam, pre = null["families"], null.get("preregistered") or {}
    runs = next(iter(fam.values()), {})
    design = (f"{runs.get('n_runs_real', '?')} real-label vs {runs.get('n_runs_permuted', '?')} permuted-label "
              f"fine-tunes{_null_runs(m)}")  # fmt: skip
    screens = ", ".join(
        f"{c['n_significant' if learned else 'n_significant_ungated']} of {c['n_tests']} {name.replace('_', ' ')}"
        + (f" (detectable {_num(c['mde'])})" if c.get("mde") is not None else "")
        for name, c in fam.items()
    )
    decisions = [c.get("decision") for c in pre.values()]
    primary = "; ".join(_contrast_text(n, c) for n, c in pre.items())
    if not learned:
        text = (f"Not attributable to the task: the model did not learn, so no attention change is claimed "
                f"({design}; primary contrasts: {primary}; screens without that gate: {screens} at FDR 0.05).")  # fmt: skip
        return {"tested": False, "n_discoveries": 0, "decision": "not claimed", "text": text}
    n = sum(d == "discovery" for d in decisions)
    if n:
        head, decision = "Attention changed beyond what fine-tuning on permuted labels does", "discovery"
    elif decisions and all(d == "no change within the margin" for d in decisions):
        head, decision = (
            "No change beyond fine-tuning on permuted labels, within the pre-stated margins",
            "no change",
        )
    else:
        head, decision = "Undetermined whether the task changed attention beyond fine-tuning on permuted labels", (
            "undetermined")  # fmt: skip
    text = f"{head} ({design}). Primary contrasts: {primary}. Screens at FDR 0.05: {screens}."
    return {"tested": True, "n_discoveries": n, "decision": decision, "text": text}


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
        head += f"; task-specific change: {out['task_change']['decision']}"
    if "call" in out["truth"]:
        head += {"adds": "; the labels add to planted-gene recovery",
                 "less": "; the labels weaken planted-gene recovery"}.get(
            out["truth"]["call"], "; task-specific recovery undetermined")  # fmt: skip
    out["headline"] = head
    return out
