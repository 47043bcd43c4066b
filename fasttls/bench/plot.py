"""``--plot FILE.png``: the fasttls/stdlib ratio of every row as a horizontal bar chart, with the
1.0 line (parity) and each row's target. The axis is logarithmic, bars start at 1.0: 2x faster
and 2x slower are bars of the same length, and create_default_context's ~50x fits with the
rest. matplotlib is an optional extra (``fasttls[plot]``),
never a runtime dependency; ``require()`` says so before any row runs."""

TICKS = (0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 5, 10, 20, 50, 100, 200)
WIDE_TICKS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200)     # when the axis spans > 20x
INSTALL_HINT = "pip install 'fasttls[plot]' (or matplotlib)"


def require():
    """None if matplotlib imports, else the error message for the command line."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        return f"--plot needs matplotlib, which is not installed ({e}); {INSTALL_HINT}"
    return None


def plot(result, path):
    """Draw `result` (``run_bench``'s dict) to `path` (any format matplotlib infers from the
    file name, PNG by default)."""
    import matplotlib

    matplotlib.use("Agg")   # files only: no display needed
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = result["rows"][::-1]      # first row on top
    labels = [f"{r['workload']} ({r['name']})" for r in rows]
    ratios = [r["ratio"] for r in rows]
    colors = ["tab:green" if r["met"] else ("tab:orange" if r["ratio"] >= 1 else "tab:red")
              for r in rows]
    fig, ax = plt.subplots(figsize=(10, 0.38 * len(rows) + 1.6))
    try:
        y = range(len(rows))
        ax.barh(y, [ratio - 1 for ratio in ratios], left=1, color=colors)
        ax.scatter([r["target"] for r in rows], y, marker="|", s=250, color="black",
                   zorder=3, label="target")
        ax.axvline(1.0, color="black", linewidth=1, linestyle="--", label="stdlib (1.0)")
        for yi, r in zip(y, rows):    # the figure beyond the bar's end (or a target just past it)
            if r["ratio"] >= 1:
                near = r["ratio"] <= r["target"] <= r["ratio"] * 1.25
                ax.text((r["target"] if near else r["ratio"]) * 1.01, yi, f" {r['ratio']:.2f}x",
                        va="center", fontsize=8, ha="left")
            else:
                ax.text(r["ratio"], yi, f"{r['ratio']:.2f}x ", va="center", fontsize=8,
                        ha="right")
        ax.set_yticks(list(y))
        ax.set_yticklabels(labels, fontsize=8)
        ax.set_xlabel("fasttls / stdlib (higher is better)")
        v = result["versions"]
        ax.set_title(f"fasttls bench: Python {v['python']}, {v['stdlib_openssl']}, "
                     f"{result['cipher']}", fontsize=9)
        ax.set_xscale("log")
        values = ratios + [r["target"] for r in rows] + [1.0]
        low, high = min(values) / 1.3, max(values) * 1.6
        ax.set_xlim(low, high)
        ticks = WIDE_TICKS if high / low > 20 else TICKS
        ax.set_xticks([t for t in ticks if low <= t <= high])
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}x"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
