# Aqua image scan result as a CycloneDX 1.1 BOM (XML) with the vulnerability extension.
package postee.vuls.cyclondx

import data.postee.with_default
import future.keywords

# Postee writes one fixed serial number into every BOM; kept so existing consumers see the same output.
tpl := `<?xml version="1.0"?>
<bom serialNumber="urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79" version="1"
     xmlns="http://cyclonedx.org/schema/bom/1.1"
     xmlns:v="http://cyclonedx.org/schema/ext/vulnerability/1.0">
  <components>
  %s
  </components>
</bom>`

component_tpl := `    <component type="application">
      <name>%s</name>
      <version>%s</version>
      <licenses>
        <license>
          <id>%s</id>
        </license>
      </licenses>
      <v:vulnerabilities>%s</v:vulnerabilities>
    </component>`

vulnerability_tpl := `
        <v:vulnerability>
          <v:id>%s</v:id> 
          <v:source name="NVD">
            <v:url>%s</v:url>
          </v:source>
          <v:ratings>
            <v:rating>
              <v:score>
                <v:base>%v</v:base>
                <v:impact>%v</v:impact>
                <v:exploitability>%v</v:exploitability>
              </v:score>
              <v:severity>%s</v:severity>
              <v:method>%s</v:method>
              <v:vector>%s</v:vector>
            </v:rating>
          </v:ratings>
          <v:recommendations>
            <v:recommendation>%s</v:recommendation>
          </v:recommendations>
        </v:vulnerability>`

render_vulnerability(vln) = sprintf(vulnerability_tpl, [
	vln.name,
	with_default(vln, "nvd_url", ""),
	score,
	score,
	score,
	with_default(vln, "aqua_severity", ""),
	with_default(vln, "aqua_scoring_system", ""),
	with_default(vln, "aqua_vectors", ""),
	with_default(vln, "solution", "No solution available"),
]) {
	score := with_default(vln, "aqua_score", 0)
}

components := [sprintf(component_tpl, [r.name, r.version, with_default(r, "license", ""), vulns]) |
	some item in input.resources
	r := item.resource
	vulns := concat("", [render_vulnerability(vln) | some vln in with_default(item, "vulnerabilities", [])])
]

title := input.image

result := sprintf(tpl, [concat("", components)])
