"""Imported at every Python start when this folder is on PYTHONPATH (bench/gpu.sh part4): sets the GIL's
switch interval to $SWITCH_INTERVAL seconds (Python's default: 0.005), for the daemon and its clients."""

import os
import sys

if os.environ.get("SWITCH_INTERVAL"):
    sys.setswitchinterval(float(os.environ["SWITCH_INTERVAL"]))
