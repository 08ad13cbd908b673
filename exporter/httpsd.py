"""/sd: the configured targets in Prometheus's HTTP service discovery format.

One config file then feeds both the exporters and the Prometheus servers that drive them
through /probe (``http_sd_configs``), sharded with ``hashmod`` relabelling; see README
"Running at scale". The answer is a JSON list of target groups, one per (module, labels):

    [{"targets": ["smtp.example.com:587"],
      "labels": {"module": "submission", "__param_module": "submission", "site": "par"}}]

``__param_module`` becomes the ``module`` URL parameter of the scrape, ``module`` and the
target's own labels become labels of every series scraped. Targets are listed as written
(``mx:`` targets included: /probe expands them), in config order, whatever --shard says:
sharding is Prometheus's job in this mode.
"""

from __future__ import annotations

import json

from .config import Config


def render(cfg: Config | None) -> str:
    """The target groups of ``cfg`` as Prometheus expects them from an http_sd endpoint."""
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[str]] = {}
    for target in cfg.targets if cfg else ():
        groups.setdefault((target.module.name, target.labels), []).append(target.name)
    out = []
    for (module, labels), names in groups.items():
        out.append(
            {
                "targets": names,
                "labels": {"module": module, "__param_module": module, **dict(labels)},
            }
        )
    return json.dumps(out, indent=1) + "\n"
