"""What tests share: fabricated data in the real formats, small learners, tasks, scripts run in
subprocesses (DDP), and the repository root."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
