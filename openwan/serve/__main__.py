from openwan.serve import main

raise SystemExit(main())
