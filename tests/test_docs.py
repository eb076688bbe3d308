"""The generated options reference matches the option schema."""

import subprocess
import sys

from esrgan.options import REPO_ROOT


def test_options_reference_is_up_to_date():
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "gen_options_doc.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
