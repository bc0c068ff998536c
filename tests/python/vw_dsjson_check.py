"""Reads a DSJSON file (`servegraph evaluate --export dsjson`) with Vowpal Wabbit's own parser
(`--cb_explore_adf --dsjson`), learns on every line (so VW consumes each one), and prints, from
the labels VW parsed, the IPS estimates of three policies: always the first action, uniform,
and the logging policy (the mean reward); and, from the VW team's estimators library
(`vw-estimators`), IPS, SNIPS and the Gaussian 95 % interval of the first two. Usage:
vw_dsjson_check.py FILE; prints JSON."""
import json
import sys

import vowpalwabbit
from estimators.bandits import gaussian, ips, snips

FLT_MAX = 3.0e38

ws = vowpalwabbit.Workspace("--cb_explore_adf --dsjson --quiet")
n = 0
actions = None
ips0 = ipsu = logging = 0.0
est = {name: (ips.Estimator(), snips.Estimator(), gaussian.Interval()) for name in ("always_0", "uniform")}
with open(sys.argv[1]) as f:
    for number, line in enumerate(f, 1):
        exs = ws.parse(line, vowpalwabbit.LabelType.CONTEXTUAL_BANDIT)
        # The first example is the shared one (its label marks it shared); the others are the
        # actions, in `_multi` order.
        acts = exs[1:]
        labelled = [
            (j, c)
            for j, e in enumerate(acts)
            for c in e.get_label(vowpalwabbit.LabelType.CONTEXTUAL_BANDIT).costs
            if c.cost < FLT_MAX
        ]
        if len(labelled) != 1:
            sys.exit(f"line {number}: {len(labelled)} labelled actions")
        j, c = labelled[0]
        if c.action != j + 1:
            sys.exit(f"line {number}: _label_Action {c.action} is not the labelled example {j} + 1")
        if actions is None:
            actions = len(acts)
        elif actions != len(acts):
            sys.exit(f"line {number}: {len(acts)} actions, earlier lines {actions}")
        reward, p = -c.cost, c.probability
        ips0 += (1.0 if j == 0 else 0.0) * reward / p
        ipsu += (1.0 / len(acts)) * reward / p
        logging += reward
        for name, pred in (("always_0", 1.0 if j == 0 else 0.0), ("uniform", 1.0 / len(acts))):
            for e in est[name]:
                e.add_example(p, reward, pred)
        ws.learn(exs)
        ws.finish_example(exs)
        n += 1
ws.finish()
out = {"lines": n, "actions": actions, "ips_always_0": ips0 / n,
       "ips_uniform": ipsu / n, "ips_logging": logging / n}
for name, (i, s, g) in est.items():
    out[f"estimators_{name}"] = {"ips": i.get(), "snips": s.get(), "gaussian95": g.get(alpha=0.05)}
print(json.dumps(out))
