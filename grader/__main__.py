from grader.commands.cli import main

main()
