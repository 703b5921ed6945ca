-- produces: edges
-- tags: graph
-- The edges table of the code graph: CALLS edges from callsites to their
-- winning definition, and DEFINED_IN edges from definitions to files.
WITH callsite_files AS (
    SELECT cs.callsite_id, normalize_path(f.path) AS src_file
    FROM cst_callsites AS cs
    JOIN files AS f ON f.file_id = cs.file_id
)
SELECT calls.src, calls.dst, 'CALLS' AS kind, cf.src_file
FROM calls
JOIN callsite_files AS cf ON cf.callsite_id = calls.src
UNION ALL
SELECT d.def_id AS src, d.file_id AS dst, 'DEFINED_IN' AS kind, normalize_path(f.path) AS src_file
FROM cst_defs AS d
JOIN files AS f ON f.file_id = d.file_id
