# Several rendered `postee.vuls.slack` messages merged into one Slack message (route `aggregate-message-*`).
# `input` is the array of rendered items: {title, description (the blocks, already parsed), url, ...}.
package postee.vuls.slack.aggregation

import data.postee.clamp
import data.postee.flat_array
import future.keywords

# Slack accepts at most 50 blocks in one message.
max_blocks := 50

# A scan's blocks: a heading with its title, its own blocks (or its text), a divider.
scan_blocks(item) = array.concat(array.concat([heading(item)], body), [{"type": "divider"}]) {
	body := blocks_of(item.description)
}

heading(item) = {"type": "header", "text": {"type": "plain_text", "text": item.title}}

blocks_of(description) = description {
	is_array(description)
} else = [{"type": "section", "text": {"type": "mrkdwn", "text": sprintf("%v", [description])}}]

all_blocks := flat_array([scan_blocks(item) | some item in input])

title := sprintf("Vulnerability scan report (%d scans)", [count(input)])

result := array.slice(all_blocks, 0, clamp(count(all_blocks), max_blocks))
