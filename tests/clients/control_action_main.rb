# Driver for the seed's ContainerManager (control_action.rb):
#   ruby control_action_main.rb <start|stop|restart|pause|unpause> <cuid>
# with CM_URL / CM_USER / CM_PASS in the environment.  Prints "RESULT <json>" with the parsed
# answer of the seed's method (or the exception).
require_relative 'control_action'

action, cuid = ARGV
manager = ContainerManager.new(ENV.fetch('CM_URL'), ENV.fetch('CM_USER'), ENV.fetch('CM_PASS'))
begin
  result = manager.public_send(action, cuid)
  puts "RESULT #{JSON.generate({ 'ok' => true, 'result' => result })}"
rescue StandardError => e
  puts "RESULT #{JSON.generate({ 'ok' => false, 'error' => "#{e.class}: #{e.message}" })}"
  exit 1
end
