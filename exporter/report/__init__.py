"""Renderers for ``--once``: a readable table (``table``), JSON lines (``jsonl``), and the
Nagios plugin format (``nagios``); ``common`` holds what they say alike.

Pure functions from results to text; nothing here touches the network. Secrets cannot
appear: results hold none (failure details are masked by the probe).
"""

from .common import Canaries, cert_days, display_name, reason
from .jsonl import as_dict, canary_dict, domain_dict, json_lines
from .nagios import CRITICAL, OK, UNKNOWN, WARNING, NagiosThresholds, nagios
from .table import domain_row, domain_table, posture_table, table

__all__ = [
    "CRITICAL",
    "OK",
    "UNKNOWN",
    "WARNING",
    "Canaries",
    "NagiosThresholds",
    "as_dict",
    "canary_dict",
    "cert_days",
    "display_name",
    "domain_dict",
    "domain_row",
    "domain_table",
    "json_lines",
    "nagios",
    "posture_table",
    "reason",
    "table",
]
