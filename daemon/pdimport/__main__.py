from pdimport.cli import main

raise SystemExit(main())
