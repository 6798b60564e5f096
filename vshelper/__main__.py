import sys

from vshelper.main import main

sys.exit(main())
