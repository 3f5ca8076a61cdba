#!/usr/bin/env python3
"""Before/after table of a specs/default.ini run, from its report.json only
(no figure is measured here): the two eval nodes' size, bits per weight,
perplexity and time, the compression node's time and the saved file.

    python3 contrib/report-table.py OUT/report.json [BEFORE AFTER COMPRESS SAVE]
"""
import json
import sys


def main(argv):
    if len(argv) not in (2, 6):
        sys.stderr.write(__doc__)
        return 2
    before, after, compress, save = argv[2:] if len(argv) == 6 else ("eval-original", "eval", "quantize", "save")
    with open(argv[1], encoding="utf-8") as f:
        report = json.load(f)
    nodes = {n["name"]: n for n in report["nodes"]}
    for name in (before, after, compress, save):
        if name not in nodes:
            sys.stderr.write("report-table: %s: expected a node named '%s', found %s\n"
                             % (argv[1], name, ", ".join(sorted(nodes))))
            return 1
    rows = []
    for label, name in (("original", before), ("compressed", after)):
        m = nodes[name].get("metrics") or {}
        if "perplexity" not in m:
            sys.stderr.write("report-table: %s: node '%s' measured no perplexity (no data=?)\n" % (argv[1], name))
            return 1
        ppl = m["perplexity"]
        rows.append((label, "%d" % m["bytes"], "%.3f" % m["bits_per_weight"],
                     "%.4f +- %.4f" % (ppl, ppl * m["nll_stderr"]),
                     "%.1f s (%.0f tok/s)" % (nodes[name]["duration"], m["tokens_per_s"])))
    head = ("model", "size (bytes)", "bits/weight", "perplexity", "eval time")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    m_before, m_after = nodes[before]["metrics"], nodes[after]["metrics"]
    print()
    print("before/after (%d windows of %d tokens, from %s)" % (m_after["windows"], m_after["ctx"], argv[1]))
    print(line(head))
    for r in rows:
        print(line(r))
    c = nodes[compress]
    extra = []
    if "kl" in m_after:
        extra.append("KL to the original %.4f nats/token, top-1 agreement %.1f%% (the compressed model's eval time "
                     "includes running the original beside it for these)" % (m_after["kl"], 100 * m_after["top1"]))
    print("compression (%s, %s): %.1f s; %.2fx smaller%s" % (compress, c["pass"], c["duration"],
          m_before["bytes"] / m_after["bytes"], "; " + "; ".join(extra) if extra else ""))
    s = nodes[save]
    if s.get("output_bytes"):
        print("saved: %d bytes (%s)" % (s["output_bytes"], save))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
