// Command validate checks the output of `helm template` for the pageviews chart against the
// Kubernetes API types, offline: no cluster, no schema download.
//
// Each document is decoded strictly into the Go type the API server and the operators use
// (k8s.io/api, the Prometheus Operator's monitoring/v1, KEDA's keda/v1alpha1), so a
// misspelled or misplaced field, a value of the wrong type, a duplicate key or a kind the
// chart should not produce is an error. Then the objects are checked against each other
// (checks.go): what the API server's validation or the operators would refuse, or what
// would deploy and not work.
//
//	helm template ... | validate            exits 1 naming every problem, 0 with a summary
//	validate rendered.yaml ...
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// object is one decoded document and where it came from.
type object struct {
	source string // "<file> document <n>", and helm's "# Source:" line when present
	obj    runtime.Object
}

func main() {
	inputs := os.Args[1:]
	var objs []object
	var problems []string
	if len(inputs) == 0 {
		inputs = []string{"-"}
	}
	for _, path := range inputs {
		o, p, err := readFile(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "validate: %v\n", err)
			os.Exit(2)
		}
		objs = append(objs, o...)
		problems = append(problems, p...)
	}
	if len(objs) == 0 && len(problems) == 0 {
		problems = append(problems, "no Kubernetes objects in the input")
	}
	problems = append(problems, check(objs)...)
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintf(os.Stderr, "validate: %s\n", p)
		}
		os.Exit(1)
	}
	fmt.Printf("validate: %s: valid\n", summary(objs))
}

// scheme holds every type the chart may render; anything else is refused.
func scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme,
		monitoringv1.AddToScheme, kedav1alpha1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

var decoder = serializer.NewCodecFactory(scheme(), serializer.EnableStrict).UniversalDeserializer()

func readFile(path string) ([]object, []string, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, nil, err
		}
		defer f.Close()
		r = f
	} else {
		path = "stdin"
	}
	docs := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var objs []object
	var problems []string
	for n := 1; ; n++ {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: document %d: %w", path, n, err)
		}
		source := fmt.Sprintf("%s document %d", path, n)
		if s := helmSource(doc); s != "" {
			source += " (" + s + ")"
		}
		// Duplicate keys: the YAML-to-JSON step of the strict decoder keeps the last one
		// silently, so they are looked for here.
		j, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", source, err))
			continue
		}
		if bytes.Equal(bytes.TrimSpace(j), []byte("null")) {
			continue // only comments
		}
		obj, gvk, err := decoder.Decode(j, nil, nil)
		if err != nil {
			if runtime.IsNotRegisteredError(err) || gvk == nil || gvk.Kind == "" {
				problems = append(problems, fmt.Sprintf("%s: %v (the chart renders only %s)", source, err, knownKinds()))
			} else {
				problems = append(problems, fmt.Sprintf("%s: %s %v", source, gvk.Kind, err))
			}
			continue
		}
		objs = append(objs, object{source: source, obj: obj})
	}
	return objs, problems, nil
}

// helmSource is the template a document came from, from the comment helm puts first.
func helmSource(doc []byte) string {
	for _, line := range strings.Split(string(doc), "\n") {
		if s, ok := strings.CutPrefix(line, "# Source: "); ok {
			return s
		}
	}
	return ""
}

func knownKinds() string {
	return "core/v1, apps/v1, policy/v1, monitoring.coreos.com/v1 and keda.sh/v1alpha1 kinds"
}

func summary(objs []object) string {
	count := map[string]int{}
	for _, o := range objs {
		count[o.obj.GetObjectKind().GroupVersionKind().Kind]++
	}
	kinds := make([]string, 0, len(count))
	for k, n := range count {
		kinds = append(kinds, fmt.Sprintf("%d %s", n, k))
	}
	sort.Strings(kinds)
	return strings.Join(kinds, ", ")
}
