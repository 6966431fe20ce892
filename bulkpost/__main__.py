"""Entry point for ``python -m bulkpost``."""

from bulkpost.cli.main import main

if __name__ == "__main__":
    main()
