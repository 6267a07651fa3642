import GatewayKit
import UCSPI

TCPRulesCheckCommand.main(Arguments.raw)
