package streambus

// compareIDs for the external tests.
var CompareIDs = compareIDs
