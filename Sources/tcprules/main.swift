import UCSPI

TCPRulesCommand.main(CommandLine.arguments)
