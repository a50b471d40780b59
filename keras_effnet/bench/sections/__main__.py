"""``python -m keras_effnet.bench.sections <module:function> <config.json> <out_dir>
<result.json>``: one function of the benchmark in a fresh process (the child side of
:class:`keras_effnet.bench.child.Child`)."""

import contextlib
import sys

from keras_effnet.bench.child import main

if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main(sys.argv))
