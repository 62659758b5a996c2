// Command brokertests classifies the tests of a Go package directory (franz-go's
// pkg/kgo) as broker tests or unit tests, by reading its _test.go files: a test
// is a broker test when its body reaches, through functions and methods declared
// in those files, one of the helpers that dial the broker named by KGO_SEEDS.
// It prints one line per test: name, tab, "broker" or "unit".
//
//	go run ./brokertests DIR
package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// seedHelpers are the helpers_test.go functions that reach KGO_SEEDS (or the
// SASL seeds); every path to the broker goes through one of them.
var seedHelpers = []string{"getSeedBrokers", "adm", "testClientOpts", "newTestClient", "scramSeeds", "oauthSeeds"}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: brokertests DIR")
		os.Exit(2)
	}
	refs, tests, err := parseTestFiles(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	reaching := reachingSeeds(refs)
	sort.Strings(tests)
	for _, name := range tests {
		kind := "unit"
		if reaching[name] {
			kind = "broker"
		}
		fmt.Printf("%s\t%s\n", name, kind)
	}
}

// parseTestFiles returns, for each function or method declared in DIR's
// _test.go files (methods keyed by their name alone), the identifiers its body
// uses, and the names of the Test functions.
func parseTestFiles(dir string) (map[string]map[string]bool, []string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil || len(files) == 0 {
		return nil, nil, fmt.Errorf("no _test.go files in %s", dir)
	}
	refs := map[string]map[string]bool{}
	var tests []string
	fset := token.NewFileSet()
	for _, path := range files {
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return nil, nil, err
		}
		for _, decl := range f.Decls {
			collectDecl(decl, refs, &tests)
		}
	}
	return refs, tests, nil
}

func collectDecl(decl ast.Decl, refs map[string]map[string]bool, tests *[]string) {
	switch d := decl.(type) {
	case *ast.FuncDecl:
		name := d.Name.Name
		if name == "init" && d.Recv == nil {
			return // never called by name; a method named init would be confused with it
		}
		addRefs(refs, name, d.Body)
		if d.Recv == nil && strings.HasPrefix(name, "Test") && name != "TestMain" {
			*tests = append(*tests, name)
		}
	case *ast.GenDecl: // package-level vars such as `var randsha = func() ...`
		for _, spec := range d.Specs {
			if vs, ok := spec.(*ast.ValueSpec); ok {
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						addRefs(refs, n.Name, vs.Values[i])
					} else {
						addRefs(refs, n.Name, nil)
					}
				}
			}
		}
	}
}

func addRefs(refs map[string]map[string]bool, name string, node ast.Node) {
	if refs[name] == nil {
		refs[name] = map[string]bool{}
	}
	if node == nil {
		return
	}
	ast.Inspect(node, func(n ast.Node) bool {
		if id, ok := n.(*ast.Ident); ok {
			refs[name][id.Name] = true
		}
		return true
	})
}

// reachingSeeds returns the declared names from which a seed helper is
// reachable through the reference graph.
func reachingSeeds(refs map[string]map[string]bool) map[string]bool {
	reaching := map[string]bool{}
	for _, s := range seedHelpers {
		reaching[s] = true
	}
	for changed := true; changed; {
		changed = false
		for name, uses := range refs {
			if reaching[name] {
				continue
			}
			for use := range uses {
				if use != name && reaching[use] {
					reaching[name] = true
					changed = true
					break
				}
			}
		}
	}
	return reaching
}
