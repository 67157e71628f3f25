"""Stage `promote`: the promotion gate. `candidate` (what the register stages moved) becomes `champion`
(what every server follows) only when it is at least as good, so that with a shared tracking server the
last `dvc repro` does not decide what production serves.

    python -m ops.gate          # the `promote` stage; settings: params.yaml `promote` (conf/promote/)

For `digits` and `digits-reader`, each on its own:
- no candidate, or the candidate is the champion already: nothing to do;
- the candidate must pass the checks a server makes before serving it (model.onnx fetched, its sha256 against
  the model_sha256 tag, the self-test on known digits or numbers: serve/model.py), else it is refused;
- no champion (or one that no longer passes those checks): the candidate becomes champion;
- otherwise both read the robustness suite's conditions (testkit/uploads.py, `promote.conditions`) drawn from
  the *validation* split (data/prepared/val.npz; never test digits), the same images for both, through the
  API's own path (testkit/robustness.py `evaluate`: an app from serve's create_app, its test client), and
  the candidate is promoted only when no row is worse by more than its noise: `promote.noise_sigmas` times
  the binomial standard error of the difference (each side's rate smoothed as (k+1)/(n+2), so a row both read
  perfectly still has some). The reader's rows go through /read with the digits champion the gate leaves.
The float versions are compared; digits-int8@champion follows its source (ops/promote.py int8_follows).
A promotion is recorded like every move of champion (ops/promote.py move: who, when, why "gate: ...").
A refused candidate is not a failure: the stage exits 0 and production stays where it was, but it says so
loudly. Writes champion/promotion.md (the table: row, n, champion, candidate, difference, noise, verdict)
and champion/promotion.json.
"""
import json
import math
import time
from pathlib import Path

from digits.contract import ALIAS, CANDIDATE, MODEL_NAME, READER_NAME
from ops.promote import at_alias, checked, client_for, int8_follows, move, registry_uri
from serve.model import ModelError

OUT_MD, OUT_JSON = Path("champion/promotion.md"), Path("champion/promotion.json")
LOWER_IS_BETTER = {"ALL real digits"}  # the share of real digits rejected; every other row: higher is better


def noise(p, q, n, m) -> float:
    """The standard error of q - p, two binomial rates of n and m images, each smoothed as (k+1)/(n+2)."""
    a, b = (p * n + 1) / (n + 2), (q * m + 1) / (m + 2)
    return math.sqrt(a * (1 - a) / n + b * (1 - b) / m)


def compare(champion_rows, candidate_rows, sigmas) -> list:
    """One dict per row (both tables have the same rows, in order: a row missing on one side is an error, never
    a row left unjudged): the values, the difference (candidate - champion), its noise and the verdict: "worse"
    when the candidate is worse by more than sigmas x noise, "better" when better by that much, else "same"."""
    rows = []
    for old, new in zip(champion_rows, candidate_rows, strict=True):
        assert old.condition == new.condition, (old.condition, new.condition)
        difference = new.value - old.value
        sign = -1 if old.condition in LOWER_IS_BETTER else 1
        sd = noise(old.value, new.value, old.n, new.n)
        verdict = "worse" if sign * difference < -sigmas * sd else "better" if sign * difference > sigmas * sd else "same"
        rows.append({"row": old.condition, "metric": old.metric, "n": old.n, "champion": old.value,
                     "candidate": new.value, "difference": difference, "noise": sd, "verdict": verdict,
                     "lower_is_better": sign < 0})
    return rows


def app_for(model, reads_with=None):
    """An app (serve's create_app, no polling) serving a digits model, or a reader beside the digits model
    `reads_with` (what /read uses with it)."""
    from serve import create_app
    from serve.config import Settings

    if model.kind == "reader":
        return create_app(reads_with, Settings(model_poll_seconds=0), reader=model)
    return create_app(model, Settings(model_poll_seconds=0))


def robustness(models, cfg, split, reads_with=None) -> list:
    """Each model's robustness rows on the validation split, as testkit/robustness.py `evaluate` makes them
    (its `measure` row by row, then its two summary rows), each condition's images drawn once and read by
    every model: the same images for all, and half the drawing."""
    from testkit import robustness as rb
    from testkit.uploads import generate

    x, y = split
    clients = [app_for(model, reads_with).test_client() for model in models]
    tables = [[] for _ in models]
    for name in cfg["conditions"][models[0].kind]:
        samples = generate(name, cfg["n"], cfg["seed"], x, y)
        for client, rows in zip(clients, tables):
            row, rejected = rb.measure(client, name, samples)
            rows.append((row, rejected))
    return [summarised(rows) for rows in tables]


def summarised(measured) -> list:
    """(row, digits rejected) pairs -> the rows, then the pooled rows, the gate's most sensitive (n times the
    rows): all single digits read right, all numbers read exactly, and evaluate's two summaries, all non-digits
    rejected and the real digits rejected (single digits, and numbers written apart)."""
    from testkit import robustness as rb

    rows = [row for row, _ in measured]
    for kind, name in (("digit", "ALL single digits"), ("number", "ALL numbers")):
        same = [r for r in rows if r.kind == kind]
        if len(same) > 1:
            total = sum(r.n for r in same)
            rows.append(rb.Row(name, "summary", total, same[0].metric, sum(r.value * r.n for r in same) / total, 0.0, ""))
    return rows + rb.summaries(measured)


def label(version):
    return None if version is None else str(version.version)


def registered_here(client, name, summary: Path):
    """The version this pipeline's register stage registered (its summary file names it), or None. On a shared
    tracking server `candidate` may have moved on to a teammate's version since: this run judges its own."""
    from mlflow.exceptions import MlflowException

    try:
        version = json.loads(summary.read_text()).get("version")
        return client.get_model_version(name, str(version)) if version is not None else None
    except (OSError, ValueError, MlflowException):
        return None


def decide(client, uri, name, cfg, split, reads_with=None, summary=None):
    """Judge the candidate against name@champion and move champion when it wins: the version the register
    stage's summary file names (this run's), else name@candidate. -> (the decision, as promotion.json keeps
    it; the loaded model that is champion afterwards, or None when none passes)."""
    alias, champion = at_alias(client, name, CANDIDATE), at_alias(client, name, ALIAS)
    candidate = (registered_here(client, name, summary) if summary else None) or alias
    decision = {"name": name, "candidate": label(candidate), "champion": label(champion), "promoted": False,
                "rows": [], "outcome": "", "why": ""}
    if alias is not None and label(alias) != label(candidate):
        decision["note"] = (f"{name}@{CANDIDATE} is version {alias.version} (registered since by another run); "
                            f"this run judges its own version {candidate.version}")
    loaded = None

    def champion_now():
        try:
            return checked(uri, name, champion) if champion is not None else None
        except ModelError:
            return None

    if candidate is None:
        decision["outcome"] = f"no {name}@{CANDIDATE}: nothing to judge"
        return decision, champion_now()
    if champion is not None and label(champion) == label(candidate):
        decision["outcome"] = f"{name}@{CANDIDATE} is {name}@{ALIAS} already (version {champion.version}): nothing to do"
        loaded = champion_now()
        if name == MODEL_NAME and loaded is not None:
            decision["int8"] = int8_follows(client, uri, name, champion)
        return decision, loaded
    try:
        new = checked(uri, name, candidate)
    except ModelError as e:
        decision.update(outcome="refused", why=f"candidate version {candidate.version} fails the server's checks: {e}")
        return decision, champion_now()
    if champion is None:
        why = f"gate: no {name}@{ALIAS}; version {candidate.version} passes the server's checks (sha256, self-test)"
    else:
        try:
            old = checked(uri, name, champion)
        except ModelError as e:
            old, why = None, (f"gate: champion version {champion.version} no longer passes the server's checks ({e}); "
                              f"version {candidate.version} does")
        if old is not None:
            if new.kind == "reader" and reads_with is None:
                decision.update(outcome="refused", why="no digits model passes its checks to read numbers with")
                return decision, old
            started = time.perf_counter()
            decision["rows"] = compare(*robustness([old, new], cfg, split, reads_with), cfg["noise_sigmas"])
            decision["seconds"] = round(time.perf_counter() - started, 1)
            worse = [r["row"] for r in decision["rows"] if r["verdict"] == "worse"]
            if worse:
                decision.update(outcome="refused", worse=worse, why=f"candidate version {candidate.version} is worse than champion "
                                f"version {champion.version} beyond noise on {len(worse)} validation row(s): "
                                f"{', '.join(worse)}")
                return decision, old
            better = sum(r["verdict"] == "better" for r in decision["rows"])
            why = (f"gate: at least as good as version {champion.version} on {len(decision['rows'])} validation rows "
                   f"({cfg['n']} images a condition, seed {cfg['seed']}; {better} better, none worse beyond "
                   f"{cfg['noise_sigmas']:g} sigma)")
    entry = move(client, uri, name, candidate, why, champion)
    decision.update(promoted=True, outcome="promoted", why=why, move=entry)
    return decision, new


def markdown(decisions, cfg) -> str:
    lines = ["# Promotion gate", "",
             f"`candidate` (registered by this pipeline) against `champion` (what servers follow), on the robustness "
             f"suite's conditions drawn from the validation split: {cfg['n']} images a condition, seed {cfg['seed']}, "
             f"the same images for both, through the API. A row is worse when the candidate is below the champion by "
             f"more than {cfg['noise_sigmas']:g} × the binomial standard error of the difference (noise).", ""]
    for d in decisions:
        head = {"promoted": "PROMOTED", "refused": "REFUSED"}.get(d["outcome"], "unchanged")
        lines += [f"## {d['name']}: {head}", "",
                  f"candidate version {d['candidate'] or '-'}, champion version {d['champion'] or '-'} before the gate. "
                  f"{d['outcome'] if head == 'unchanged' else d['why']}", ""]
        if d.get("note"):
            lines += [d["note"] + ".", ""]
        if d.get("int8"):
            lines += [f"INT8: {d['int8']}", ""]
        if d["rows"]:
            lines += ["| row | metric | n | champion | candidate | difference | noise | verdict |",
                      "|---|---|---:|---:|---:|---:|---:|---|"]
            for r in d["rows"]:
                mark = {"worse": "**WORSE**", "better": "better", "same": "same"}[r["verdict"]]
                lines.append(f"| {r['row']} | {r['metric']}{' (lower is better)' if r['lower_is_better'] else ''} | "
                             f"{r['n']} | {r['champion']:.2%} | {r['candidate']:.2%} | {r['difference']:+.2%} | "
                             f"±{r['noise']:.2%} | {mark} |")
            lines += ["", f"{d.get('seconds', 0):.0f} s to read both.", ""]
    return "\n".join(lines) + "\n"


def main():
    from pipeline.params import load
    from pipeline.preprocess import load_split

    cfg = load()["promote"]
    uri = registry_uri()
    client = client_for(uri)
    split = load_split("val")  # data/prepared/val.npz: the validation split, never test digits
    started = time.perf_counter()
    digits, digits_model = decide(client, uri, MODEL_NAME, cfg, split, summary=Path("champion/champion.json"))
    reader, _ = decide(client, uri, READER_NAME, cfg, split, reads_with=digits_model, summary=Path("champion/reader.json"))
    decisions = [digits, reader]
    OUT_MD.parent.mkdir(exist_ok=True)
    OUT_MD.write_text(markdown(decisions, cfg))
    OUT_JSON.write_text(json.dumps({"settings": cfg, "decisions": decisions,
                                    "seconds": round(time.perf_counter() - started, 1)}, indent=2) + "\n")
    for d in decisions:
        if d["outcome"] == "refused":
            bar = "!" * 100
            hint = (f" A person may still promote it: `python -m ops.promote {d['candidate']} --name {d['name']} "
                    "--why TEXT`." if d["rows"] else "")  # refused on its table, not on the server's checks
            print(f"{bar}\npromote: {d['name']}@{CANDIDATE} (version {d['candidate']}) REFUSED: {d['why']}.\n"
                  f"promote: {d['name']}@{ALIAS} stays version {d['champion'] or 'none'}: production is unchanged. "
                  f"The table: {OUT_MD}.{hint}\n{bar}", flush=True)
        elif d["promoted"]:
            print(f"promote: {d['name']}@{ALIAS} is version {d['candidate']} (was {d['champion'] or 'none'}): "
                  f"{d['why']}" + (f"; {d['move']['int8']}" if d["move"].get("int8") else ""))
        else:
            print(f"promote: {d['name']}: {d['outcome']}")


if __name__ == "__main__":
    main()
