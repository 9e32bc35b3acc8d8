"""Dependencies point one way (docs/design.md, "Architecture"): envs never imports torch or metarl."""

import subprocess
import sys


def test_import_envs_imports_neither_torch_nor_metarl() -> None:
    code = (
        "import sys, gymnasium as gym\nimport metarl_envs as envs\n"
        "for family in envs.FAMILIES:\n"
        "    envs.distribution(family)\n"
        "    gym.make(envs.env_id(family)).close()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'metarl', 'stable_baselines3'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"envs imported: {out.stdout.strip()}"
