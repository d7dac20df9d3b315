"""``python -m openwan.caches calibrate ...`` (see openwan.caches.calibration)."""
import sys

from openwan.caches.calibration import main

if __name__ == "__main__":
    sys.exit(main())
