from photoseek.cli import main

if __name__ == "__main__":  # decode workers re-import the main module; they must not re-run the CLI
    main()
