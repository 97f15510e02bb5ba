# The whole event as pretty-printed JSON (for webhooks and other machine consumers).
package postee.rawmessage.json

title := "-"

# Postee adds its own `postee` object to every event before rendering; it is not part of the message.
result := jsonformat(object.remove(input, ["postee"]))
