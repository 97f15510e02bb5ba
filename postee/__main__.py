from postee.cli import main

raise SystemExit(main())
