import GatewayKit
import UCSPI

TCPRulesCommand.main(Arguments.raw)
