"""Run every notebook in order with papermill, as `make run` does:

    .venv/bin/python notebooks/run.py --dataset flickr8k

Each dataset's executed notebooks land in their own folder, `outputs/<DATASET>/`, each also as
HTML. A notebook runs into a temporary file that replaces the previous copy only once every cell
has run: a notebook that fails never replaces a good one. It is kept as
`outputs/<DATASET>/failed/<notebook>.ipynb` instead, its one-line reason is printed (not
papermill's traceback: that is in the kept notebook) and the sequence stops there.
"""
import argparse
import sys
import time
from pathlib import Path

import papermill
from jupyter_client.manager import AsyncKernelManager
from nbconvert import HTMLExporter
from traitlets import CaselessStrEnum

REPO = Path(__file__).resolve().parent.parent


class QuietKernelManager(AsyncKernelManager):
    """The kernel each notebook runs in, as papermill starts it, with two lines fewer in the
    terminal: it speaks over local sockets (IPC), so nothing listens on the network and the kernel
    does not warn of "TCP without encryption"; and its shutdown, after the last cell, skips the
    interrupt that jupyter_client sends first (nothing runs by then, and the kernel would log
    "KeyboardInterrupt caught in kernel" as an error)."""
    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

    async def _async_interrupt_kernel(self):
        if not self.shutting_down:
            await super()._async_interrupt_kernel()


def run_notebook(notebook, folder, parameters):
    """Execute `notebook` into `folder`; returns (True, the executed copy) or (False, the failed
    copy, with the reason printed)."""
    done, failed = folder / notebook.name, folder / "failed" / notebook.name
    partial = folder / f".{notebook.stem}.running.ipynb"
    try:
        papermill.execute_notebook(str(notebook), str(partial), parameters=parameters,
                                   cwd=str(REPO), kernel_manager_class=QuietKernelManager)
    except papermill.PapermillExecutionError as error:
        failed.parent.mkdir(exist_ok=True)
        partial.replace(failed)
        print(f"\n{notebook.stem} stopped: {error.ename}: {error.evalue}")
        print(f"the executed notebook, with the whole error: {failed}")
        return False, failed
    except BaseException:  # interrupted: nothing half-run is left behind
        partial.unlink(missing_ok=True)
        raise
    partial.replace(done)
    failed.unlink(missing_ok=True)
    html, _ = HTMLExporter().from_filename(str(done))
    done.with_suffix(".html").write_text(html, encoding="utf-8")
    return True, done


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="sample", help="DATASET of every notebook")
    parser.add_argument("--output", default=REPO / "outputs", type=Path,
                        help="executed notebooks go to OUTPUT/DATASET/")
    parser.add_argument("--notebooks", default=REPO / "notebooks", type=Path,
                        help="the folder of numbered notebooks to run")
    args = parser.parse_args(argv)
    folder = args.output / args.dataset
    folder.mkdir(parents=True, exist_ok=True)
    for notebook in sorted(args.notebooks.glob("[0-9][0-9]_*.ipynb")):
        started = time.perf_counter()
        ok, executed = run_notebook(notebook, folder, {"DATASET": args.dataset})
        if not ok:
            return 1
        print(f"{notebook.stem}: {time.perf_counter() - started:.0f} s, {executed}")
    print(f"\nDone. The executed notebooks, with their captions, scores and plots, are in {folder}/"
          f"\n(open {folder}/05_decode_and_evaluate.html in a browser); caption your own photos "
          "with: make app")
    return 0


if __name__ == "__main__":
    sys.exit(main())
