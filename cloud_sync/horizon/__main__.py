from cloud_sync.horizon.cli import main

raise SystemExit(main())
