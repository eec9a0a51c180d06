"""Coded concepts used by the node's documents: one table, no inline triplets elsewhere."""

from __future__ import annotations

from pydicom.sr.coding import Code

# CID 7010 Key Object Selection Document Title (PS3.16).
SIGNED_COMPLETE_ACQUISITION_CONTENT = Code("113035", "DCM", "Signed Complete Acquisition Content")
SIGNED_MANIFEST = Code("113031", "DCM", "Signed Manifest")
# TID 2010 row 6, and TID 1002/1004 observer context (PS3.16).
KEY_OBJECT_DESCRIPTION = Code("113012", "DCM", "Key Object Description")
OBSERVER_TYPE = Code("121005", "DCM", "Observer Type")
DEVICE = Code("121007", "DCM", "Device")
DEVICE_OBSERVER_UID = Code("121012", "DCM", "Device Observer UID")
DEVICE_OBSERVER_NAME = Code("121013", "DCM", "Device Observer Name")

# PS3.17 Annex X dictation reports: TID 2005, CID 7000/7001/7002 (PS3.16).
FOR_REPORT_ATTACHMENT = Code("113020", "DCM", "For Report Attachment")
DIAGNOSTIC_IMAGING_REPORT = Code("18748-4", "LN", "Diagnostic Imaging Report")
LANGUAGE_OF_CONTENT = Code("121049", "DCM", "Language of Content Item and Descendants")
KEY_IMAGES = Code("121180", "DCM", "Key Images")
DICOM_OBJECT_CATALOG = Code("121181", "DCM", "DICOM Object Catalog")
EQUIVALENT_CDA_DOCUMENT = Code("121331", "DCM", "Equivalent CDA Document")
# CID 7001 Diagnostic Imaging Report Heading (LOINC section codes).
HISTORY = Code("11329-0", "LN", "History")
REQUEST = Code("55115-0", "LN", "Request")
CURRENT_PROCEDURE_DESCRIPTIONS = Code("55111-9", "LN", "Current Procedure Descriptions")
PRIOR_PROCEDURE_DESCRIPTIONS = Code("55114-3", "LN", "Prior Procedure Descriptions")
PREVIOUS_FINDINGS = Code("18834-2", "LN", "Previous Findings")
FINDINGS = Code("59776-5", "LN", "Findings")
IMPRESSIONS = Code("19005-8", "LN", "Impressions")
RECOMMENDATIONS = Code("18783-1", "LN", "Recommendations")
CONCLUSIONS = Code("55110-1", "LN", "Conclusions")
ADDENDUM = Code("55107-7", "LN", "Addendum")
INDICATIONS_FOR_PROCEDURE = Code("18785-6", "LN", "Indications for Procedure")
PATIENT_PRESENTATION = Code("55108-5", "LN", "Patient Presentation")
COMPLICATIONS = Code("55109-3", "LN", "Complications")
SUMMARY = Code("55112-7", "LN", "Summary")
CLINICAL_INFORMATION = Code("55752-0", "LN", "Clinical Information")
# CID 7002 Diagnostic Imaging Report Element.
PROCEDURE_DESCRIPTION = Code("121065", "DCM", "Procedure Description")
PREVIOUS_FINDING = Code("121069", "DCM", "Previous Finding")
FINDING = Code("121071", "DCM", "Finding")
IMPRESSION = Code("121073", "DCM", "Impression")
RECOMMENDATION = Code("121075", "DCM", "Recommendation")
CONCLUSION = Code("121077", "DCM", "Conclusion")
COMPLICATION_OF_PROCEDURE = Code("116224001", "SCT", "Complication of Procedure")
