# The whole event, pretty-printed, inside an HTML <pre> block.
package postee.rawmessage.html

title := "Raw Message Received"

# Postee adds its own `postee` object to every event before rendering; it is not part of the message.
result := sprintf("<pre><code>%s</code></pre>", [jsonformat(object.remove(input, ["postee"]))])
