"""Run `iterview train` with every process also writing its own EMA and model replicas at each checkpoint, as
<dump>/<name>_rank<R>_step<S>.safetensors, so a test can compare the ranks' actual weights. Usage (under
`accelerate launch`): ddp_rank_weights.py DUMP_DIR -- <iterview train arguments>."""

from __future__ import annotations

import sys
from pathlib import Path

from safetensors.torch import save_file

from iterview.cli import app
from iterview.training import trainer


def main() -> None:
    dump, separator, *arguments = sys.argv[1:]
    assert separator == "--", "usage: ddp_rank_weights.py DUMP_DIR -- ARGS"
    real_save = trainer._save

    def save_every_rank(accelerator, output_dir, state, net, ema, *rest):
        for name, module in (("model", net), ("ema", ema)):
            weights = accelerator.unwrap_model(module).state_dict()
            path = Path(dump) / f"{name}_rank{accelerator.process_index}_step{state.step}.safetensors"
            save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, path)
        real_save(accelerator, output_dir, state, net, ema, *rest)

    trainer._save = save_every_rank
    app(args=arguments)


if __name__ == "__main__":
    main()
