import UCSPI

TCPRulesCheckCommand.main(CommandLine.arguments)
