from cloud_sync.receiver.cli import main

raise SystemExit(main())
