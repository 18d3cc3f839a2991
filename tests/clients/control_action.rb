# Seed 004 "Container Control Operations" (Ruby), kept as written in the seed (without its
# usage lines, which target a fixed example cuid).  control_action_main.rb is the driver.

# Ruby example
require 'net/http'
require 'json'
require 'base64'

class ContainerManager
  def initialize(base_url, username, password)
    @base_url = base_url
    @auth = Base64.encode64("#{username}:#{password}").strip
  end

  def control_action(cuid, action)
    uri = URI("#{@base_url}/containers/#{cuid}/#{action}")
    http = Net::HTTP.new(uri.host, uri.port)

    request = Net::HTTP::Post.new(uri)
    request['Authorization'] = "Basic #{@auth}"
    request['Content-Type'] = 'application/json'

    response = http.request(request)
    JSON.parse(response.body)
  end

  def start(cuid)
    control_action(cuid, 'start')
  end

  def stop(cuid)
    control_action(cuid, 'stop')
  end

  def restart(cuid)
    control_action(cuid, 'restart')
  end

  def pause(cuid)
    control_action(cuid, 'pause')
  end

  def unpause(cuid)
    control_action(cuid, 'unpause')
  end
end
