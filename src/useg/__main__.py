from useg.cli import main

raise SystemExit(main())
