from photoseek.interrupts import quit_on_signals

if __name__ == "__main__":  # decode workers re-import the main module; they must not re-run the CLI
    quit_on_signals()  # before the imports below: a Ctrl-C during them ends the process quietly

from photoseek.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
