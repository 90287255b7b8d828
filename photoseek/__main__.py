from photoseek.cli import main

main()
